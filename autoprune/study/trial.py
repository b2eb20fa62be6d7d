"""One trial, start to end: prune -> measure -> check constraints -> fine-tune (stopped early if a
faster trial is already better part-way, see early_stop.py) -> evaluate -> save.

Everything a trial learns is recorded on the Optuna trial, so a report, a resumed study or
another worker sees the same facts: objectives, constraint excesses, measured figures and
where the time went (see store/records.py).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna

from ..console import ProgressBar
from ..pruning.prune import kept_out_channels
from ..runtime.evaluate import evaluate
from ..runtime.finetune import finetune
from ..runtime.measure import Measurement, measure
from ..store.artifacts import upload_checkpoint
from ..store.checkpoint import save_checkpoint
from ..store.records import TrialRecord, objective_values, record_seconds, record_trial
from .config import suggest_config
from .constraints import accuracy_excess, hard_excess
from .early_stop import screening_hook
from .prepared import PreparedModel


@dataclass
class TrialContext:
    """What every trial of one search shares; built once, before the first trial."""

    prepared: PreparedModel  # the unpruned model, its inputs, space, dimensions and device
    train: Any
    val: Any
    threads: int
    finetune_steps: int
    constraints: dict[str, float]
    baseline_accuracy: float
    baseline: Measurement
    artifact_store: Any
    metric: Callable
    loss_fn: Callable
    gradient_batches: list = field(default_factory=list)
    latency_run_time: float = 0.3
    early_stop_margin: float | None = None  # None: every trial fine-tunes to the end


def run_trial(trial: optuna.Trial, ctx: TrialContext) -> tuple[float, float, float]:
    """Run one trial and return its objectives; raises (failing only this trial) on errors."""
    clock = time.perf_counter
    prepared, device = ctx.prepared, ctx.prepared.device
    config = suggest_config(trial, prepared.space, prepared.dimensions)
    record_trial(trial, config=config.to_dict())

    start = clock()
    pruned = prepared.prune(config.sparsity, config.criterion, ctx.gradient_batches, ctx.loss_fn)
    record_seconds(trial, "prune", clock() - start)
    record_trial(trial, kept_channels=kept_out_channels(pruned.model))

    start = clock()
    figures = measure(pruned.model, prepared.example_inputs, device, ctx.threads,
                      ctx.latency_run_time)
    record_seconds(trial, "measure", clock() - start)
    record_trial(trial, measurement=figures.to_dict(),
                 speedup=ctx.baseline.latency_ms / figures.latency_ms,
                 mac_reduction=ctx.baseline.macs / max(1, figures.macs))

    excess = hard_excess(figures, ctx.constraints)
    for key, value in excess.items():
        trial.set_constraint(key, value)
    violated = {key: value for key, value in excess.items() if value > 0}
    if violated:
        # Not worth fine-tuning: the sampler learns from the excess, and we move on.
        drop_excess = accuracy_excess(ctx.baseline_accuracy, None, ctx.constraints)
        if drop_excess is not None:
            trial.set_constraint("max_accuracy_drop", drop_excess)
        record_trial(trial, skipped_finetune=", ".join(
            f"{key} over its limit by {value:.4g}" for key, value in violated.items()))
        return objective_values(0.0, figures)

    start = clock()
    screening = None if ctx.early_stop_margin is None else screening_hook(
        trial, ctx.finetune_steps, figures.latency_ms, ctx.early_stop_margin,
        lambda: evaluate(pruned.model, ctx.val, device, ctx.metric))
    with ProgressBar(f"trial {trial.number} fine-tuning", total=ctx.finetune_steps,
                     leave=False) as bar:
        train_loss = finetune(pruned.model, prepared.model, ctx.train, ctx.finetune_steps,
                              config.lr, config.distillation, device, ctx.loss_fn,
                              prepared.space.optimizer, on_step=screening,
                              on_progress=lambda step, loss: bar.update(1, loss=loss))
    record_seconds(trial, "finetune", clock() - start)
    record_trial(trial, train_loss=train_loss)

    start = clock()
    screened = TrialRecord.of(trial)  # stopped early: the weights are those just screened
    accuracy = screened.screen_accuracy if screened.stopped_early else evaluate(
        pruned.model, ctx.val, device, ctx.metric)
    record_seconds(trial, "evaluate", clock() - start)
    drop_excess = accuracy_excess(ctx.baseline_accuracy, accuracy, ctx.constraints)
    if drop_excess is not None:
        trial.set_constraint("max_accuracy_drop", drop_excess)

    start = clock()
    with tempfile.TemporaryDirectory(prefix="autoprune-trial-") as staging:
        save_checkpoint(staging, pruned.model, prepared.model, pruned.history,
                        prepared.example_inputs,
                        extra={"trial": trial.number, "config": config.to_dict(),
                               "measurement": figures.to_dict(), "accuracy": accuracy})
        upload_checkpoint(trial, Path(staging), ctx.artifact_store)
    record_seconds(trial, "save", clock() - start)
    return objective_values(accuracy, figures)
