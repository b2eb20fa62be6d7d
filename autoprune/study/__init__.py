"""The search as an Optuna study: what a trial may try (`space`, `config`), its limits
(`constraints`, `budget`), the checks before trial 1 (`preflight`), one trial end to end
(`trial`, `early_stop`), what runs after each (`callbacks`), and `search()` (`runner`)."""

from .budget import Budget, parse_budget
from .runner import search
from .space import SearchSpace, load_search_space

__all__ = ["Budget", "SearchSpace", "load_search_space", "parse_budget", "search"]
