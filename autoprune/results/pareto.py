"""Pareto fronts and hypervolume of a study's trials, in one place.

Objectives are (metric, latency down, memory down), the metric up (accuracy) or down (an
error), as the study's first direction says. The hypervolume is taken on normalised
coordinates: latency and memory as fractions of the unpruned model's; a maximized metric as
is, with reference 0, so a value of 1 would be a perfectly accurate model that costs nothing;
a minimized metric as a multiple of the unpruned model's, with reference 2 (twice the
original's error adds nothing). Only models cheaper than the original on both costs add
volume. Optuna's hypervolume routine is private API, wrapped here alone.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState


def is_feasible(trial: FrozenTrial) -> bool:
    return all(value <= 0 for value in trial.constraints.values())


def metric_direction(study: optuna.Study) -> str:
    """'maximize' or 'minimize': how the study ranks its first objective, the metric."""
    return "maximize" if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else "minimize"


def non_dominated(trials: list[FrozenTrial], direction: str = "maximize") -> list[FrozenTrial]:
    """The trials no other beats on every objective (vectorised: runs after every trial);
    `direction` is the metric's.

    Of trials with equal values on every objective only the latest stays: it offers the same
    model figures, and it is usually a promotion that fine-tuned its member further without
    changing its score (a front that lists one model twice helps no one pick).
    """
    if not trials:
        return []
    sign = -1.0 if direction == "maximize" else 1.0
    # As losses: lower is better on every column.
    losses = np.array([(sign * t.values[0], t.values[1], t.values[2]) for t in trials])
    numbers = np.array([t.number for t in trials])
    dominated = np.zeros(len(trials), dtype=bool)
    for start in range(0, len(trials), 512):  # in blocks, so memory stays small for long studies
        block = losses[None, start:start + 512, :]
        no_worse = (losses[:, None, :] <= block).all(axis=2)  # [i, j]: i is no worse than j
        better = (losses[:, None, :] < block).any(axis=2)
        later = numbers[:, None] > numbers[None, start:start + 512]
        dominated[start:start + 512] = (no_worse & (better | later)).any(axis=0)
    return [t for t, lost in zip(trials, dominated) if not lost]


def front_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Completed, feasible trials no other such trial beats on every objective."""
    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if is_feasible(t)]
    return non_dominated(trials, metric_direction(study))


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
            self.front = sorted(non_dominated(candidates, metric_direction(study)),
                                key=lambda t: t.number)
        return self.front


def hypervolume(points: Sequence[Sequence[float]], baseline_latency_ms: float,
                baseline_memory_mb: float, direction: str = "maximize",
                baseline_metric: float | None = None) -> float:
    """Hypervolume of (metric, latency_ms, memory_mb) points (see the module docstring); a
    minimized metric needs the unpruned model's value, `baseline_metric`."""
    from optuna._hypervolume import compute_hypervolume

    if direction == "maximize":
        first, reference = (lambda m: -m), 0.0
    else:
        scale = abs(baseline_metric) if baseline_metric else 1.0
        first, reference = (lambda m: m / scale), 2.0
    losses = [(first(m), lat / baseline_latency_ms, mem / baseline_memory_mb)
              for m, lat, mem in points]
    losses = [p for p in losses if p[0] < reference and p[1] < 1 and p[2] < 1]
    if not losses:
        return 0.0
    return float(compute_hypervolume(np.asarray(losses), np.asarray([reference, 1.0, 1.0])))


def hypervolume_history(trials: list[FrozenTrial], baseline_latency_ms: float,
                        baseline_memory_mb: float, direction: str = "maximize",
                        baseline_metric: float | None = None) -> list[tuple[FrozenTrial, float]]:
    """The front's hypervolume after each feasible completed trial, in completion order."""
    done = sorted((t for t in trials if t.state == TrialState.COMPLETE and is_feasible(t)),
                  key=lambda t: t.datetime_complete)
    history, front = [], []
    for trial in done:
        front = non_dominated(front + [trial], direction)
        history.append((trial, hypervolume([t.values for t in front], baseline_latency_ms,
                                           baseline_memory_mb, direction, baseline_metric)))
    return history
