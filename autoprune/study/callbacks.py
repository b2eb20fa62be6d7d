"""Callbacks run after every trial: progress lines, and the checkpoint retention policy."""

from __future__ import annotations

import gc
import logging
import re
import statistics
import time
from pathlib import Path

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from ..console import ProgressBar
from ..errors import RepeatedFailureError
from ..results.pareto import FrontTracker
from ..results.result import candidate_from_trial
from ..runtime.task import cost, metric_of, show_metric
from ..store.artifacts import remove_checkpoint
from ..store.records import TrialRecord
from .budget import Budget, format_duration

logger = logging.getLogger(__name__)


def _short(metric: dict) -> str:
    """The metric's name in a progress line: 'acc' for accuracy, as the lines always said."""
    return "acc" if metric["name"] == "accuracy" else metric["name"]


class CheckpointRetention:
    """Keeps disk bounded: deletes the checkpoints of finished trials not on the front.

    The front is judged on the figures measured during each trial. Only finished trials are
    considered, so a trial still running (here or on another worker) keeps its files, and so
    does a front member whose promotion (promotion.py) is queued or running.
    """

    def __init__(self, artifact_store, cache_dir: Path, front: FrontTracker | None = None):
        self.artifact_store, self.cache_dir = artifact_store, cache_dir
        self.front = front or FrontTracker()
        self.done: set[int] = set()  # finished trials whose checkpoint is gone (or never was)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        trials = study.get_trials(deepcopy=False)
        keep = {t.number for t in self.front.update(study)}
        # a promotion not finished yet still needs the checkpoint it continues from
        keep |= {n for t in trials if not t.state.is_finished()
                 for n in (TrialRecord.of(t).continues, TrialRecord.of(t).quantizes)}
        for finished in trials:
            if (finished.number in self.done or finished.number in keep
                    or not finished.state.is_finished()):
                continue
            if TrialRecord.of(finished).checkpoint_artifacts:
                remove_checkpoint(finished, self.artifact_store, self.cache_dir)
            self.done.add(finished.number)


class ReleaseAfterFailure:
    """Frees what a failed trial held (its pruned model, optimizer state, activations) before
    the next trial starts.

    A trial that raised (out of memory, a NaN loss) leaves its tensors in reference cycles
    through the exception's traceback and the pruner's graph; Python would free them only at
    its next cyclic collection, which on a GPU that just ran out of memory is too late. By the
    time callbacks run, the exception is gone, so a collection frees them, and CUDA's cached
    blocks go back to the device.
    """

    def __init__(self, device: torch.device):
        self.device = device

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state == TrialState.FAIL:
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()


class Progress:
    """One line per finished trial (what it gave, trials done, time left, the front), and a bar
    of the budget on a terminal: trials done against the total, or seconds spent."""

    def __init__(self, budget: Budget, baseline_latency: float, start: float,
                 front: FrontTracker | None = None):
        self.budget, self.baseline_latency = budget, baseline_latency
        self.start = start
        self.front = front or FrontTracker()
        self.durations: list[float] = []
        self.bar: ProgressBar | None = None

    def __enter__(self) -> "Progress":
        if self.budget.trials is not None:
            self.bar = ProgressBar("search", total=self.budget.trials, unit="trial",
                                   plain_lines=False)
        else:
            self.bar = ProgressBar("search", total=round(self.budget.seconds or 0), unit="s",
                                   plain_lines=False)
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()

    def typical_trial_seconds(self) -> float:
        return statistics.median(self.durations) if self.durations else 0.0

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        record = TrialRecord.of(trial)
        if (trial.state == TrialState.COMPLETE and trial.datetime_start and trial.datetime_complete
                and not record.stopped_early  # a full trial is what must fit
                and record.continues is None  # promotions are planned apart
                and record.quantizes is None):  # int8 twins take seconds
            self.durations.append((trial.datetime_complete - trial.datetime_start).total_seconds())
        trials = study.get_trials(deepcopy=False)
        done = sum(1 for t in trials if t.state == TrialState.COMPLETE)
        metric = metric_of(study)
        front = [candidate_from_trial(t, self.baseline_latency, metric=metric)
                 for t in self.front.update(study)]
        if trial.state == TrialState.COMPLETE:
            skipped = record.skipped_finetune
            timed = (f"({record.speedup:.2f}x)" if record.latency_source == "paired" else
                     f"({record.speedup:.2f}x predicted)" if record.speedup else "(predicted)")
            what = ("not fine-tuned" if skipped else
                    f"{_short(metric)} {show_metric(trial.values[0], metric):>6}") + \
                f" | {trial.values[1]:6.2f} ms {timed}" \
                f" | {trial.values[2]:5.1f} MiB | {trial.params.get('criterion')}" + \
                (" int8" if (record.config or {}).get("precision") == "int8" else "")
            if skipped:
                what += f" | {skipped}"
            if record.stopped_early:
                what += f" | stopped early after {record.screen_step} steps"
            if record.continues is not None:
                what += (f" | continues trial {record.continues}: +{record.promoted_steps} "
                         f"steps, {record.finetuned_steps} in all")
            if record.quantizes is not None:
                what += f" | trial {record.quantizes}'s weights in int8"
        elif trial.state == TrialState.PRUNED:
            what = f"not run: {record.surplus or 'pruned'}"
        else:
            what = f"FAILED: {record.failure or trial.state.name}"
        target = f"/{self.budget.trials}" if self.budget.trials else ""
        left = ""
        if self.budget.seconds is not None:
            elapsed = time.monotonic() - self.start
            left = f", {format_duration(self.budget.seconds - elapsed)} left"
        best = min((c for c in front if c.speedup >= 1.5), default=None,
                   key=lambda c: cost(c.accuracy, metric["direction"]))
        best_text = (f", best at >=1.5x: {show_metric(best.accuracy, metric)} at "
                     f"{best.speedup:.2f}x" if best else "")
        logger.info(f"[trial {trial.number:>3}] {what}   ({done}{target} complete{left}, "
                    f"front {len(front)}{best_text})")
        if self.bar is not None:
            if self.budget.trials is not None:
                self.bar.advance_to(min(done, self.budget.trials))
            else:
                self.bar.advance_to(min(round(time.monotonic() - self.start),
                                        self.bar.total or 0))


class StopOnRepeatedFailure:
    """Ends a search whose trials keep failing the same way (training data the model cannot
    take, a loss that is always NaN): `limit` trials of this process in a row failed with
    the same reason (numbers aside) raise `RepeatedFailureError`. Every trial is already
    recorded; a completed trial resets the count."""

    def __init__(self, limit: int):
        self.limit, self.reasons = limit, []

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state == TrialState.COMPLETE:
            self.reasons = []
        if trial.state != TrialState.FAIL:
            return
        reason = TrialRecord.of(trial).failure or "no reason recorded"
        self.reasons.append(re.sub(r"\d+(\.\d+)?", "#", reason))
        if self.limit and len(self.reasons) >= self.limit and len(set(self.reasons[-self.limit:])) == 1:
            raise RepeatedFailureError(
                f"the search stopped: its last {self.limit} trials all failed with the same "
                f"error ({reason[:500]}); fix its cause and run the same command again to "
                f"resume (study {study.study_name!r}: finished trials are kept)")
