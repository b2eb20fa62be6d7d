"""What a search leaves: the Pareto front and its models (`result`, `pareto`), the HTML
report (`report`, `settings_table`) and verified exports (`export`)."""

from .export import FORMATS, ExportError, load
from .result import Candidate, NoCandidateError, SearchResult

__all__ = ["Candidate", "ExportError", "FORMATS", "NoCandidateError", "SearchResult", "load"]
