"""autoprune: automated structural-pruning search for PyTorch models."""

import sys

from .errors import (AutopruneError, CheckpointError, InvalidInputError, SearchSpaceError,
                     TrialFailure)
from .pruning.criteria import CRITERIA, register_criterion
from .results.export import FORMATS, ExportError, load
from .results.result import Candidate, NoCandidateError, SearchResult
from .store.checkpoint import load_checkpoint
from .study.budget import Budget, parse_budget
from .study.runner import search
from .study.space import SearchSpace, load_search_space

__version__ = "0.1.0"

from .integrations import huggingface  # noqa: E402  (`from autoprune import huggingface`)

# `import autoprune.huggingface` keeps working now that the module lives in integrations/
sys.modules[f"{__name__}.huggingface"] = huggingface

__all__ = [
    "AutopruneError", "Budget", "CRITERIA", "Candidate", "CheckpointError", "ExportError",
    "FORMATS", "InvalidInputError", "NoCandidateError", "SearchResult", "SearchSpace",
    "SearchSpaceError", "TrialFailure", "huggingface", "load", "load_checkpoint",
    "load_search_space", "parse_budget", "register_criterion", "search",
]
