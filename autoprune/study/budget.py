"""Parse the user's search budget: wall-clock time, a trial count, or both."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import InvalidInputError

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Budget:
    """How long a search may run: `seconds` of wall clock and/or `trials` in total."""

    seconds: float | None = None
    trials: int | None = None

    def describe(self) -> str:
        parts = []
        if self.seconds is not None:
            parts.append(format_duration(self.seconds))
        if self.trials is not None:
            parts.append(f"{self.trials} trials")
        return " or ".join(parts)


def parse_duration(text: str | int | float) -> float:
    """Seconds in "90s", "20m", "8h", "1.5h", "2d" or a plain number of seconds."""
    if isinstance(text, bool):
        raise InvalidInputError(f"budget must be a duration such as '20m', not {text!r}")
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        match = _DURATION.match(str(text))
        if not match:
            raise InvalidInputError(
                f"cannot parse budget {text!r}: use a number of seconds or a duration "
                "such as '90s', '20m', '8h' or '1.5h'"
            )
        seconds = float(match.group(1)) * _UNIT_SECONDS[(match.group(2) or "s").lower()]
    if not seconds > 0:
        raise InvalidInputError(f"budget must be positive, got {text!r}")
    return seconds


def parse_budget(budget: str | int | float | None, trials: int | None) -> Budget:
    """Validate the pair the user gave `search()`; at least one of them is required."""
    if trials is not None:
        if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
            raise InvalidInputError(f"trials must be a positive integer, got {trials!r}")
    if budget is None and trials is None:
        raise InvalidInputError("give a time budget (budget='20m') or a trial count (trials=N)")
    seconds = None if budget is None else parse_duration(budget)
    return Budget(seconds=seconds, trials=trials)


def format_duration(seconds: float) -> str:
    """A short human reading of a number of seconds: '45s', '12m05s', '8h00m'."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
