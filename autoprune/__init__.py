"""autoprune: automated structural-pruning search for PyTorch models."""

from .budget import Budget, parse_budget
from .checkpoint import load_checkpoint
from .criteria import CRITERIA, register_criterion
from .errors import (AutopruneError, CheckpointError, InvalidInputError, SearchSpaceError,
                     TrialFailure)
from .export import FORMATS, ExportError, load
from .result import Candidate, NoCandidateError, SearchResult
from .space import SearchSpace, load_search_space
from .study import search

__version__ = "0.1.0"

__all__ = [
    "AutopruneError", "Budget", "CRITERIA", "Candidate", "CheckpointError", "ExportError",
    "FORMATS", "InvalidInputError", "NoCandidateError", "SearchResult", "SearchSpace",
    "SearchSpaceError", "TrialFailure", "load", "load_checkpoint",
    "load_search_space", "parse_budget", "register_criterion", "search",
]
