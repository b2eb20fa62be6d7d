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


def non_dominated(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The trials no other beats on every objective (vectorised: runs after every trial)."""
    if not trials:
        return []
    # As losses: lower is better on every column.
    losses = np.array([(-t.values[0], t.values[1], t.values[2]) for t in trials])
    dominated = np.zeros(len(trials), dtype=bool)
    for start in range(0, len(trials), 512):  # in blocks, so memory stays small for long studies
        block = losses[None, start:start + 512, :]
        no_worse = (losses[:, None, :] <= block).all(axis=2)  # [i, j]: i is no worse than j
        better = (losses[:, None, :] < block).any(axis=2)
        dominated[start:start + 512] = (no_worse & better).any(axis=0)
    return [t for t, lost in zip(trials, dominated) if not lost]


def front_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Completed, feasible trials no other such trial beats on every objective."""
    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if is_feasible(t)]
    return non_dominated(trials)


class FrontTracker:
    """The study's front, updated with only the trials finished since the last look.

    Finished trials never change and a dominated trial stays dominated, so the front of all
    trials is the front of (the last front + the trials finished since). Each update compares
    (front + new) pairs instead of every pair of the study's trials: the callbacks that run
    after every trial stay as fast at trial 2,000 as at trial 20 (tests/soak.py measures it).
    Trials finished by other workers are picked up the same way.
    """

    def __init__(self):
        self.front: list[FrozenTrial] = []
        self._seen: set[int] = set()

    def update(self, study: optuna.Study) -> list[FrozenTrial]:
        """The current front (completed, feasible, non-dominated trials), in trial order."""
        new = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
               if t.number not in self._seen]
        if new:
            self._seen.update(t.number for t in new)
            candidates = self.front + [t for t in new if is_feasible(t)]
            self.front = sorted(non_dominated(candidates), key=lambda t: t.number)
        return self.front


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
