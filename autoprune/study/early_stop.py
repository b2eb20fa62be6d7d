"""Multi-fidelity trials: stop fine-tuning a trial that a faster trial already beats.

Part-way through fine-tuning (a third of the steps), a trial is scored on the validation
data. If a finished trial that is at least as fast scored better at that same point by more
than `margin` (in the metric's units: accuracy up, or an error down), this one is very unlikely to reach the front: its fine-tuning stops there and
the trial completes with the accuracy it has, so the sampler still learns from it and the
budget goes to new configurations instead. Reference trials (uniform ratios, warm starts)
are screened for the record but always fine-tuned to the end. Comparing at the same step keeps the comparison
fair under any learning-rate schedule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import optuna
from optuna.trial import TrialState

from ..results.pareto import metric_direction
from ..runtime.task import cost
from ..store.records import TrialRecord, record_trial

SCREEN_FRACTION = 1 / 3
MIN_STEPS = 9  # shorter fine-tuning is not worth cutting


@dataclass
class ScreenVerdict:
    accuracy: float
    stop: bool
    reason: str = ""


def screen_step(steps: int) -> int | None:
    """The fine-tuning step at which a trial is screened, or None when too short to screen."""
    return None if steps < MIN_STEPS else max(1, round(steps * SCREEN_FRACTION))


def faster_rivals(study: optuna.Study, latency_ms: float) -> list[tuple[int, float, float]]:
    """(trial number, latency, screen accuracy) of finished trials at least as fast."""
    rivals = []
    for other in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        record = TrialRecord.of(other)
        if record.screen_accuracy is None or not other.values or record.skipped_finetune:
            continue
        if other.values[1] <= latency_ms:
            rivals.append((other.number, other.values[1], record.screen_accuracy))
    return rivals


def judge(study: optuna.Study, latency_ms: float, accuracy: float, margin: float) -> ScreenVerdict:
    """Stop when a faster finished trial's screen metric is better than ours by more than
    `margin` (in the metric's units and direction)."""
    direction = metric_direction(study)
    beaten = [r for r in faster_rivals(study, latency_ms)
              if cost(r[2], direction) < cost(accuracy, direction) - margin]
    if not beaten:
        return ScreenVerdict(accuracy, False)
    number, latency, better = min(beaten, key=lambda r: cost(r[2], direction))
    return ScreenVerdict(accuracy, True, f"trial {number} was as fast ({latency:.2f} ms) and "
                                         f"scored {better:.4f} against {accuracy:.4f} at the "
                                         "same step")


def screening_hook(trial: optuna.Trial, steps: int, latency_ms: float, margin: float,
                   score: Callable[[], float]) -> Callable[[int], bool] | None:
    """A `finetune` step hook that screens the trial once and says whether to stop."""
    at = screen_step(steps)
    if at is None or at >= steps:
        return None

    # The references (uniform ratios, warm starts) are scored but never stopped: they are
    # what the front is measured against, and one repeat once lost all its warm starts here.
    exempt = TrialRecord.of(trial).reference is not None

    def on_step(step: int) -> bool:
        if step != at:
            return False
        verdict = judge(trial.study, latency_ms, score(), margin)
        verdict.stop = verdict.stop and not exempt
        record_trial(trial, screen_accuracy=verdict.accuracy, screen_step=at)
        if verdict.stop:
            record_trial(trial, stopped_early=f"after {at} of {steps} fine-tuning steps: "
                                              f"{verdict.reason}")
        return verdict.stop

    return on_step
