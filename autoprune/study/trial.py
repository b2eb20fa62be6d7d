"""One trial, start to end: predict its latency -> prune -> measure -> check constraints ->
fine-tune (stopped early if a faster trial is already better part-way, see early_stop.py) ->
evaluate -> save.

The latency model (runtime/latency_model.py) predicts the configuration's latency before
anything is pruned; a prediction that already breaks a latency limit ends the trial there,
with the excess recorded for the sampler. Every other trial is timed for real, paired with
the unpruned model (measure.paired_latency): its speedup is the median per-round ratio, and
its latency that speedup applied to the study's reference latency of the unpruned model.

Everything a trial learns is recorded on the Optuna trial, so a report, a resumed study or
another worker sees the same facts: objectives, constraint excesses, measured figures and
where the time went (see store/records.py).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import optuna

from ..console import ProgressBar
from ..pruning.prune import kept_out_channels
from ..runtime.evaluate import evaluate
from ..runtime.finetune import finetune
from ..runtime.latency_model import LatencyModel
from ..runtime.measure import Measurement, measure_cost, paired_latency
from ..store.artifacts import upload_checkpoint
from ..store.checkpoint import save_checkpoint
from ..store.records import TrialRecord, objective_values, record_seconds, record_trial
from .config import suggest_config
from ..targets.base import Target
from .constraints import LATENCY, accuracy_excess, hard_excess
from .early_stop import screening_hook
from .prepared import PreparedModel


@dataclass
class TrialContext:
    """What every trial of one search shares; built once, before the first trial."""

    prepared: PreparedModel  # the unpruned model, its inputs, space, dimensions and device
    train: Any
    val: Any
    target: Target
    latency_model: LatencyModel
    finetune_steps: int
    constraints: dict[str, float]
    baseline_accuracy: float
    baseline: Measurement
    artifact_store: Any
    metric: Callable
    loss_fn: Callable
    gradient_batches: list = field(default_factory=list)
    latency_rounds: int = 7
    block_seconds: float = 0.02          # one timed block of one model (SearchOptions)
    early_stop_margin: float | None = None  # None: every trial fine-tunes to the end


def run_trial(trial: optuna.Trial, ctx: TrialContext) -> tuple[float, float, float]:
    """Run one trial and return its objectives; raises (failing only this trial) on errors."""
    clock = time.perf_counter
    prepared, device = ctx.prepared, ctx.prepared.device
    config = suggest_config(trial, prepared.space, prepared.dimensions)
    record_trial(trial, config=config.to_dict())
    predicted_ms = ctx.baseline.latency_ms * ctx.latency_model.relative(config.sparsity)
    record_trial(trial, predicted_latency_ms=predicted_ms)
    if LATENCY in ctx.constraints and predicted_ms > ctx.constraints[LATENCY]:
        return _rejected_before_pruning(trial, ctx, predicted_ms)

    start = clock()
    pruned = prepared.prune(config.sparsity, config.criterion, ctx.gradient_batches, ctx.loss_fn)
    record_seconds(trial, "prune", clock() - start)
    record_trial(trial, kept_channels=kept_out_channels(pruned.model))

    start = clock()
    paired = paired_latency(pruned.model, prepared.model, prepared.example_inputs, ctx.target,
                            ctx.latency_rounds, ctx.block_seconds)
    reference_ms = ctx.baseline.latency_ms
    figures = measure_cost(pruned.model, prepared.example_inputs, ctx.target,
                           (reference_ms / paired.speedup,
                            reference_ms * paired.speedup_spread / paired.speedup ** 2))
    record_seconds(trial, "measure", clock() - start)
    record_trial(trial, measurement=figures.to_dict(), speedup=paired.speedup,
                 paired_latency=paired.to_dict(),
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


def _rejected_before_pruning(trial: optuna.Trial, ctx: TrialContext,
                             predicted_ms: float) -> tuple[float, float, float]:
    """End a trial whose predicted latency breaks the limit: nothing is pruned or measured.

    The sampler gets the predicted excess; other hard limits, unknown without pruning, are
    recorded as met (the trial is infeasible anyway), and its objectives are accuracy 0, the
    predicted latency and the unpruned memory (an upper bound).
    """
    limit = ctx.constraints[LATENCY]
    excess = {key: 0.0 for key in hard_excess(ctx.baseline, ctx.constraints)}
    excess[LATENCY] = predicted_ms - limit
    for key, value in excess.items():
        trial.set_constraint(key, value)
    drop_excess = accuracy_excess(ctx.baseline_accuracy, None, ctx.constraints)
    if drop_excess is not None:
        trial.set_constraint("max_accuracy_drop", drop_excess)
    reason = f"predicted latency {predicted_ms:.4g} ms is over the {limit:.4g} ms limit"
    record_trial(trial, rejected_before_pruning=reason, skipped_finetune=reason)
    return objective_values(0.0, replace(ctx.baseline, latency_ms=predicted_ms))
