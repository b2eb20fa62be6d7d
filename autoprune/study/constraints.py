"""User constraints: hard hardware limits checked before fine-tuning, and limits on the metric
(the largest allowed worsening from the unpruned model, and a floor).

Each is recorded on the trial with `trial.set_constraint(name, excess)`, where an excess of
zero or less means satisfied, so Optuna's samplers steer away from infeasible regions.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from ..errors import InvalidInputError
from ..runtime.measure import Measurement
from ..runtime.task import MAXIMIZE, worsening

logger = logging.getLogger(__name__)

HARD_CONSTRAINTS = {
    "latency_ms": "median latency at the example batch size, milliseconds",
    "memory_mb": "parameters, buffers and peak activations of one inference, MiB",
    "params": "parameter count",
    "macs": "multiply-accumulates of one sample's forward pass",
}
LATENCY = "latency_ms"
ACCURACY_DROP = "max_accuracy_drop"
ACCURACY_FLOOR = "min_accuracy"
KNOWN_CONSTRAINTS = {**HARD_CONSTRAINTS,
                     ACCURACY_DROP: "largest allowed worsening of the metric from the unpruned "
                                    "model, in the metric's units (a drop of accuracy, a rise "
                                    "of a minimized error)",
                     ACCURACY_FLOOR: "lowest metric a model may have to be offered on the front "
                                     "(default with the built-in top-1 metric: half way from "
                                     "chance to the unpruned model; 0 turns it off; only for a "
                                     "maximized metric)"}


def default_accuracy_floor(baseline_accuracy: float, classes: int, share: float = 0.5) -> float:
    """The floor under the built-in top-1 metric: `share` of the way from chance (1 / classes)
    to the unpruned model's accuracy. Half way by default: a pruned model that lost more than
    half of what the original knows above guessing is not worth offering (the README demo
    once offered its fastest member at 10 %, chance on ten classes)."""
    chance = 1.0 / max(1, classes)
    return chance + share * max(0.0, baseline_accuracy - chance)


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
        if value < 0 or (value == 0 and key not in (ACCURACY_DROP, ACCURACY_FLOOR)):
            raise InvalidInputError(f"constraint {key!r} must be positive, got {value!r}")
        parsed[key] = float(value)
    return parsed


def hard_excess(measurement: Measurement, constraints: dict[str, float]) -> dict[str, float]:
    """For each hard constraint given, how far the measurement is above its limit."""
    figures = measurement.to_dict()
    return {key: figures[key] - limit for key, limit in constraints.items()
            if key in HARD_CONSTRAINTS}


def accuracy_excess(baseline: float, accuracy: float | None, constraints: dict[str, float],
                    direction: str = MAXIMIZE) -> dict[str, float]:
    """For the allowed worsening from the unpruned model and the floor, each one given: how
    far the trial is beyond it.

    A trial that was never evaluated (`accuracy` None) counts as having lost everything (for a
    minimized metric: by a finite amount, so the sampler can still use it: 1 + 10x the
    unpruned model's value past the limit).
    """
    excess = {}
    if ACCURACY_DROP in constraints:
        if accuracy is None and direction != MAXIMIZE:
            excess[ACCURACY_DROP] = 1.0 + 10 * abs(baseline)
        else:
            reached = accuracy if accuracy is not None else 0.0
            excess[ACCURACY_DROP] = (worsening(baseline, reached, direction)
                                     - constraints[ACCURACY_DROP])
    reached = accuracy if accuracy is not None else 0.0
    if constraints.get(ACCURACY_FLOOR):
        excess[ACCURACY_FLOOR] = constraints[ACCURACY_FLOOR] - reached
    return excess


def check_reachable_latency(constraints: dict[str, float], baseline_ms: float,
                            fastest: float, margin: float, exact: bool) -> None:
    """Refuse a latency limit below what the space's fastest configuration is predicted to
    reach (`fastest`: its speedup), with `margin` for the prediction's error: no trial could
    meet it. `exact`: the prediction covers every lever (no int8, no depth), else a limit
    that far below is only warned about."""
    limit = constraints.get(LATENCY)
    if limit is None:
        return
    floor_ms = baseline_ms / fastest
    if limit >= floor_ms * (1 - margin):
        return
    message = (f"the latency limit {limit:g} ms is below what the fastest configuration of "
               f"the search space is predicted to reach: {floor_ms:.3g} ms ({fastest:.2f}x "
               f"the unpruned {baseline_ms:.3g} ms)")
    if exact:
        raise InvalidInputError(message + "; no trial could meet it: raise the limit, or widen "
                                "the space's sparsity ranges (search_space=)")
    logger.warning("autoprune: " + message + " in fp32 at full depth; only int8 or removed "
                   "layers could meet it")
