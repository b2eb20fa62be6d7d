"""Pareto fronts and hypervolume of a study's trials, in one place.

Objectives are (accuracy up, latency down, memory down). The hypervolume is taken on
normalised coordinates: accuracy as is, latency and memory as fractions of the unpruned
model's. Its reference point is (accuracy 0, the unpruned latency, the unpruned memory), so
only models cheaper than the original on both costs add volume, and a value of 1 would be a
perfectly accurate model that costs nothing. Optuna's hypervolume routine is private API,
wrapped here alone.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState


def is_feasible(trial: FrozenTrial) -> bool:
    return all(value <= 0 for value in trial.constraints.values())


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    (acc_a, lat_a, mem_a), (acc_b, lat_b, mem_b) = a, b
    no_worse = acc_a >= acc_b and lat_a <= lat_b and mem_a <= mem_b
    return no_worse and (acc_a > acc_b or lat_a < lat_b or mem_a < mem_b)


def non_dominated(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if not any(_dominates(o.values, t.values) for o in trials if o is not t)]


def front_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Completed, feasible trials no other such trial beats on every objective."""
    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if is_feasible(t)]
    return non_dominated(trials)


def hypervolume(points: Sequence[Sequence[float]], baseline_latency_ms: float,
                baseline_memory_mb: float) -> float:
    """Hypervolume of (accuracy, latency_ms, memory_mb) points (see the module docstring)."""
    from optuna._hypervolume import compute_hypervolume

    losses = [(-acc, lat / baseline_latency_ms, mem / baseline_memory_mb) for acc, lat, mem in points]
    losses = [p for p in losses if p[0] < 0 and p[1] < 1 and p[2] < 1]
    if not losses:
        return 0.0
    return float(compute_hypervolume(np.asarray(losses), np.asarray([0.0, 1.0, 1.0])))


def hypervolume_history(trials: list[FrozenTrial], baseline_latency_ms: float,
                        baseline_memory_mb: float) -> list[tuple[FrozenTrial, float]]:
    """The front's hypervolume after each feasible completed trial, in completion order."""
    done = sorted((t for t in trials if t.state == TrialState.COMPLETE and is_feasible(t)),
                  key=lambda t: t.datetime_complete)
    history, front = [], []
    for trial in done:
        front = non_dominated(front + [trial])
        history.append((trial, hypervolume([t.values for t in front], baseline_latency_ms,
                                           baseline_memory_mb)))
    return history
