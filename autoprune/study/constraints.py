"""User constraints: hard hardware limits checked before fine-tuning, and an accuracy floor.

Each is recorded on the trial with `trial.set_constraint(name, excess)`, where an excess of
zero or less means satisfied, so Optuna's samplers steer away from infeasible regions.
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import InvalidInputError
from ..runtime.measure import Measurement

HARD_CONSTRAINTS = {
    "latency_ms": "median latency at the example batch size, milliseconds",
    "memory_mb": "parameters, buffers and peak activations of one inference, MiB",
    "params": "parameter count",
    "macs": "multiply-accumulates of one sample's forward pass",
}
LATENCY = "latency_ms"
ACCURACY_DROP = "max_accuracy_drop"
KNOWN_CONSTRAINTS = {**HARD_CONSTRAINTS,
                     ACCURACY_DROP: "largest allowed drop of the metric below the unpruned model"}


def parse_constraints(constraints: dict[str, Any] | None) -> dict[str, float]:
    """Validated constraints: known keys, finite positive numbers (drop may be zero)."""
    if constraints is None:
        return {}
    if not isinstance(constraints, dict):
        raise InvalidInputError(f"constraints must be a dict such as {{'latency_ms': 4.0}}, "
                                f"got {type(constraints).__name__}")
    parsed = {}
    for key, value in constraints.items():
        if key not in KNOWN_CONSTRAINTS:
            raise InvalidInputError(
                f"unknown constraint {key!r}; known constraints: " +
                ", ".join(f"{name} ({meaning})" for name, meaning in KNOWN_CONSTRAINTS.items()))
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InvalidInputError(f"constraint {key!r} must be a finite number, got {value!r}")
        if value < 0 or (value == 0 and key != ACCURACY_DROP):
            raise InvalidInputError(f"constraint {key!r} must be positive, got {value!r}")
        parsed[key] = float(value)
    return parsed


def hard_excess(measurement: Measurement, constraints: dict[str, float]) -> dict[str, float]:
    """For each hard constraint given, how far the measurement is above its limit."""
    figures = measurement.to_dict()
    return {key: figures[key] - limit for key, limit in constraints.items()
            if key in HARD_CONSTRAINTS}


def accuracy_excess(baseline: float, accuracy: float | None,
                    constraints: dict[str, float]) -> float | None:
    """How far the drop below the unpruned model exceeds the allowed drop (None: no limit set).

    A trial that was never evaluated (`accuracy` None) counts as having lost everything.
    """
    if ACCURACY_DROP not in constraints:
        return None
    drop = baseline - (accuracy if accuracy is not None else 0.0)
    return drop - constraints[ACCURACY_DROP]
