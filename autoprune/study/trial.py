"""One trial, start to end: predict its latency -> prune -> measure memory and MACs -> check
constraints -> fine-tune (stopped early if a faster trial is already better part-way, see
early_stop.py) -> evaluate -> time it, if it could join the front -> save.

The latency model (runtime/latency_model.py), refitted on the study's latest timed trials
(latency.recalibrated), predicts the configuration's latency before anything is pruned; a
prediction that already breaks a latency limit ends the trial there, with the excess
recorded for the sampler. Until the trial is evaluated its latency is that prediction. Then
a trial that could join the front is timed for real, paired with the unpruned model
(measure.paired_latency): the reading is the median per-round ratio; the trial's speedup is
that reading combined with the prediction (latency.estimated_speedup: a third the
prediction's, the steadier of the two on a shared machine), and its latency that speedup
applied to the study's reference latency of the unpruned model. A trial already dominated by
a timed one, even at 15 % below its prediction, keeps the prediction.

Everything a trial learns is recorded on the Optuna trial, so a report, a resumed study or
another worker sees the same facts: objectives, constraint excesses, measured figures and
where the time went (see store/records.py).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
import torch.nn as nn
from optuna.trial import FrozenTrial, TrialState

from ..console import ProgressBar
from ..pruning.prune import kept_out_channels
from ..results.pareto import is_feasible
from ..runtime.finetune import Distillation, finetune
from ..runtime.latency_model import LatencyModel
from ..runtime.measure import Measurement, PairedLatency, measure_cost, paired_latency
from ..runtime.quantize import OnnxModule, quantize_int8
from ..runtime.task import MAXIMIZE, Task, cost, scored, worst_value
from ..store.artifacts import local_checkpoint, upload_checkpoint
from ..store.checkpoint import (INT8_GRAPH_FILE, load_checkpoint, read_description,
                                save_checkpoint)
from ..store.records import TrialRecord, objective_values, record_seconds, record_trial
from ..targets.base import Target
from .config import suggest_config
from .constraints import LATENCY, accuracy_excess, hard_excess
from .early_stop import screening_hook
from .latency import PREDICTION_WEIGHT, estimated_speedup, prediction_weight, recalibrated
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
    task: Task  # scores and trains models (runtime/task.py): the metric and its direction
    gradient_batches: list = field(default_factory=list)
    latency_rounds: int = 7
    latency_max_rounds: int = 15
    block_seconds: float = 0.02          # one timed block of one model (SearchOptions)
    early_stop_margin: float | None = None  # None: every trial fine-tunes to the end
    prediction_margin: float = 0.15  # how wrong the latency model may be (see _worth_timing)
    prediction_weight: float = PREDICTION_WEIGHT  # the prediction's share of a timed latency
    save_dominated: bool = False     # keep_checkpoints="all": save trials never timed too
    calibration: list = field(default_factory=list)  # input batches calibrating int8
    study_uid: str | None = None     # recorded in checkpoints, checked when one is loaded

    def gradient_loss(self, model, batch):
        """The loss whose gradients rank channels (Taylor): the task's, without distillation
        (the model being pruned is still the teacher)."""
        return self.task.loss(model, model, batch, Distillation(alpha=0.0))


def run_trial(trial: optuna.Trial, ctx: TrialContext) -> tuple[float, float, float]:
    """Run one trial and return its objectives; raises (failing only this trial) on errors."""
    clock = time.perf_counter
    prepared, device = ctx.prepared, ctx.prepared.device
    start = clock()
    config = suggest_config(trial, prepared.space, prepared.dimensions,  # the sampler runs here
                            ctx.task.searches_distillation)
    record_seconds(trial, "sample", clock() - start)
    record_trial(trial, config=config.to_dict())
    if TrialRecord.of(trial).continues is not None:
        return _promoted_trial(trial, ctx, config)
    if TrialRecord.of(trial).quantizes is not None:
        return _int8_twin(trial, ctx, config)
    latency_model = recalibrated(ctx.latency_model, trial.study)  # on the latest timed trials
    predicted_ms = ctx.baseline.latency_ms * latency_model.relative(config.sparsity)
    record_trial(trial, predicted_latency_ms=predicted_ms)
    if LATENCY in ctx.constraints and predicted_ms > ctx.constraints[LATENCY]:
        return _rejected_before_pruning(trial, ctx, predicted_ms)

    start = clock()
    pruned = prepared.prune(config.sparsity, config.criterion, ctx.gradient_batches,
                            ctx.gradient_loss)
    record_seconds(trial, "prune", clock() - start)
    record_trial(trial, kept_channels=kept_out_channels(pruned.model))

    start = clock()
    # Latency is the prediction until the trial proves worth timing (see _worth_timing).
    figures = measure_cost(pruned.model, prepared.example_inputs, ctx.target, (predicted_ms, 0.0))
    record_seconds(trial, "measure", clock() - start)
    _record_figures(trial, ctx, figures, "predicted")

    if _broken_limits(trial, ctx, figures):  # not worth fine-tuning
        return objective_values(worst_value(ctx.task.direction), figures)

    start = clock()
    screening = None if ctx.early_stop_margin is None else screening_hook(
        trial, ctx.finetune_steps, predicted_ms, ctx.early_stop_margin,
        lambda: scored(ctx.task, pruned.model, device))
    with ProgressBar(f"trial {trial.number} fine-tuning", total=ctx.finetune_steps,
                     leave=False) as bar:
        train_loss = finetune(pruned.model, prepared.model, ctx.train, ctx.finetune_steps,
                              config.lr, config.distillation, device, ctx.task.loss,
                              prepared.space.optimizer, on_step=screening,
                              on_progress=lambda step, loss: bar.update(1, loss=loss))
    record_seconds(trial, "finetune", clock() - start)
    screened = TrialRecord.of(trial)  # stopped early: the weights are those just screened
    record_trial(trial, train_loss=train_loss, finetuned_steps=(
        screened.screen_step if screened.stopped_early else ctx.finetune_steps))

    start = clock()
    accuracy = screened.screen_accuracy if screened.stopped_early else scored(
        ctx.task, pruned.model, device)
    deployed, int8_graph = pruned.model, None
    if config.precision == "int8":  # the model that counts is the quantized one
        deployed, accuracy = _quantized(trial, ctx, pruned.model, accuracy)
        int8_graph, figures = deployed.graph, _int8_memory(figures)
    record_seconds(trial, "evaluate", clock() - start)
    _record_accuracy_limits(trial, ctx, accuracy)

    # An int8 model is always timed: the latency model predicts fp32.
    if int8_graph is None and not _worth_timing(trial.study, accuracy, figures,
                                                ctx.prediction_margin, ctx.task.direction):
        record_trial(trial, latency_source="predicted: a measured trial dominates it even "
                                           f"{ctx.prediction_margin:.0%} faster than predicted")
        _record_hard_limits(trial, ctx, figures)
        if not ctx.save_dominated:
            return objective_values(accuracy, figures)
    else:  # the latency model predicts fp32 only: an int8 model keeps its reading alone
        figures = _timed(trial, ctx, deployed, figures,
                         None if int8_graph is not None else predicted_ms,
                         prediction_weight(latency_model, ctx.prediction_weight))
    _save(trial, ctx, pruned.model, pruned.history, config, figures, accuracy, int8_graph)
    return objective_values(accuracy, figures)


def _quantized(trial: optuna.Trial, ctx: TrialContext, model, fp32_accuracy: float):
    """The fine-tuned model quantized to int8 (runtime/quantize.py), and its own metric."""
    graph = quantize_int8(model, ctx.prepared.example_inputs, ctx.calibration)
    int8 = OnnxModule(graph, ctx.target.threads)
    accuracy = scored(ctx.task, int8, ctx.prepared.device)
    record_trial(trial, fp32_accuracy=fp32_accuracy)
    return int8, accuracy


def _int8_memory(figures: Measurement) -> Measurement:
    """Memory with int8 weights: a quarter of fp32's bytes per parameter (activations are
    still counted as fp32: an upper bound)."""
    return replace(figures, memory_mb=figures.memory_mb - 3 * figures.params / 2 ** 20)


def _timed(trial: optuna.Trial, ctx: TrialContext, model, figures: Measurement,
           predicted_ms: float | None = None, weight: float = 0.0) -> Measurement:
    """Time `model` paired with the unpruned one; its figures with the latency estimated from
    that reading and `predicted_ms` (the prediction's share `weight`, see the docstring)."""
    start = time.perf_counter()
    paired = paired_latency(model, ctx.prepared.model, ctx.prepared.example_inputs,
                            ctx.target, ctx.latency_rounds, ctx.block_seconds,
                            ctx.latency_max_rounds)
    reference_ms = ctx.baseline.latency_ms
    speedup = estimated_speedup(paired.speedup, predicted_ms and reference_ms / predicted_ms,
                                weight)
    figures = replace(figures, latency_ms=reference_ms / speedup,
                      latency_spread_ms=reference_ms * paired.speedup_spread / speedup ** 2)
    so_far = TrialRecord.of(trial).seconds.get("measure", 0)
    record_seconds(trial, "measure", so_far + time.perf_counter() - start)
    _record_figures(trial, ctx, figures, "paired", paired)
    _record_hard_limits(trial, ctx, figures)  # with the measured latency
    return figures


def _save(trial: optuna.Trial, ctx: TrialContext, model, history: list, config,
          figures: Measurement, accuracy: float, int8_graph: bytes | None = None) -> None:
    """Write the trial's checkpoint to the artifact store (see store/artifacts.py): the fp32
    weights, and an int8 trial's quantized graph beside them."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="autoprune-trial-") as staging:
        save_checkpoint(staging, model, ctx.prepared.model, history,
                        ctx.prepared.example_inputs,
                        extra={"trial": trial.number, "study": trial.study.study_name,
                               "study_uid": ctx.study_uid,
                               "config": config.to_dict(),
                               "measurement": figures.to_dict(), "accuracy": accuracy})
        if int8_graph is not None:
            (Path(staging) / INT8_GRAPH_FILE).write_bytes(int8_graph)
        upload_checkpoint(trial, Path(staging), ctx.artifact_store)
    record_seconds(trial, "save", time.perf_counter() - start)


def _promoted_trial(trial: optuna.Trial, ctx: TrialContext,
                    config) -> tuple[float, float, float]:
    """A promotion (promotion.py): fine-tune a front member's checkpoint further.

    The architecture is the member's, so its measured figures carry over; it is timed again
    only when the member never was. The learning rate restarts its cosine schedule over the
    promoted steps (a warm restart).
    """
    clock, record = time.perf_counter, TrialRecord.of(trial)
    member = trial.study.get_trials(deepcopy=False)[record.continues]
    known = TrialRecord.of(member)
    start = clock()
    model, history = _member_checkpoint(member, ctx)
    figures = Measurement(**known.measurement)
    record_trial(trial, predicted_latency_ms=known.predicted_latency_ms,
                 kept_channels=known.kept_channels)
    _record_figures(trial, ctx, figures, known.latency_source or "predicted",
                    PairedLatency(**known.paired_latency) if known.paired_latency else None)
    record_seconds(trial, "prune", clock() - start)  # loading stands in for pruning

    start = clock()
    with ProgressBar(f"trial {trial.number} (continues {member.number}) fine-tuning",
                     total=record.promoted_steps, leave=False) as bar:
        train_loss = finetune(model, ctx.prepared.model, ctx.train, record.promoted_steps,
                              config.lr, config.distillation, ctx.prepared.device, ctx.task.loss,
                              ctx.prepared.space.optimizer,
                              on_progress=lambda step, loss: bar.update(1, loss=loss))
    record_seconds(trial, "finetune", clock() - start)
    before = known.finetuned_steps or ctx.finetune_steps
    record_trial(trial, train_loss=train_loss,
                 finetuned_steps=before + record.promoted_steps)

    start = clock()
    accuracy = scored(ctx.task, model, ctx.prepared.device)
    deployed, int8_graph = model, None
    if config.precision == "int8":  # quantized again from the longer-trained weights
        deployed, accuracy = _quantized(trial, ctx, model, accuracy)
        int8_graph = deployed.graph
    record_seconds(trial, "evaluate", clock() - start)
    _record_accuracy_limits(trial, ctx, accuracy)
    if known.latency_source == "paired":
        _record_hard_limits(trial, ctx, figures)
    else:
        fp32 = int8_graph is None
        figures = _timed(trial, ctx, deployed, figures,
                         known.predicted_latency_ms if fp32 else None,
                         prediction_weight(recalibrated(ctx.latency_model, trial.study),
                                           ctx.prediction_weight) if fp32 else 0.0)
    _save(trial, ctx, model, history, config, figures, accuracy, int8_graph)
    return objective_values(accuracy, figures)


def _member_checkpoint(member: FrozenTrial, ctx: TrialContext) -> tuple[nn.Module, list]:
    """A finished trial's fine-tuned model and its pruning history, from the artifact store."""
    with tempfile.TemporaryDirectory(prefix="autoprune-member-") as cache:
        directory = local_checkpoint(member, ctx.artifact_store, Path(cache), ctx.study_uid)
        model = load_checkpoint(directory, ctx.prepared.model).to(ctx.prepared.device)
        return model, read_description(directory)["pruning_history"]


def _int8_twin(trial: optuna.Trial, ctx: TrialContext, config) -> tuple[float, float, float]:
    """An int8 twin (promotion.Int8Twins): an fp32 trial's fine-tuned weights quantized, scored
    and timed. Nothing is pruned or fine-tuned again; the architecture's figures carry over,
    with int8 weights' memory."""
    clock, record = time.perf_counter, TrialRecord.of(trial)
    member = trial.study.get_trials(deepcopy=False)[record.quantizes]
    known = TrialRecord.of(member)
    start = clock()
    model, history = _member_checkpoint(member, ctx)
    record_trial(trial, predicted_latency_ms=known.predicted_latency_ms,
                 kept_channels=known.kept_channels, finetuned_steps=known.finetuned_steps,
                 train_loss=known.train_loss)
    record_seconds(trial, "prune", clock() - start)  # loading stands in for pruning

    start = clock()
    deployed, accuracy = _quantized(trial, ctx, model, member.values[0])
    record_seconds(trial, "evaluate", clock() - start)
    figures = _int8_memory(Measurement(**known.measurement))
    _record_figures(trial, ctx, figures, "predicted")
    _record_accuracy_limits(trial, ctx, accuracy)
    figures = _timed(trial, ctx, deployed, figures)
    _save(trial, ctx, model, history, config, figures, accuracy, deployed.graph)
    return objective_values(accuracy, figures)


def _record_figures(trial: optuna.Trial, ctx: TrialContext, figures: Measurement, source: str,
                    paired: PairedLatency | None = None) -> None:
    record_trial(trial, measurement=figures.to_dict(), latency_source=source,
                 speedup=ctx.baseline.latency_ms / figures.latency_ms,
                 mac_reduction=ctx.baseline.macs / max(1, figures.macs))
    if paired is not None:
        record_trial(trial, paired_latency=paired.to_dict())


def _record_accuracy_limits(trial: optuna.Trial, ctx: TrialContext,
                            accuracy: float | None) -> None:
    """The allowed drop and the floor, as constraints: a trial beyond either is not offered
    on the front, and the sampler learns to avoid its region."""
    for key, value in accuracy_excess(ctx.baseline_accuracy, accuracy, ctx.constraints,
                                      ctx.task.direction).items():
        trial.set_constraint(key, value)


def _record_hard_limits(trial: optuna.Trial, ctx: TrialContext, figures: Measurement) -> None:
    """Record each hard limit's excess, once per trial: Optuna ignores a constraint set again,
    so a trial sets them when its latency is final (measured, or the prediction it keeps)."""
    for key, value in hard_excess(figures, ctx.constraints).items():
        trial.set_constraint(key, value)


def _broken_limits(trial: optuna.Trial, ctx: TrialContext, figures: Measurement) -> bool:
    """True when a hard limit is broken already (latency: predicted); then the excesses are
    recorded and the trial ends. Otherwise nothing is recorded yet (see _record_hard_limits)."""
    violated = {key: value for key, value in hard_excess(figures, ctx.constraints).items()
                if value > 0}
    if violated:
        _record_hard_limits(trial, ctx, figures)
        _record_accuracy_limits(trial, ctx, None)
        record_trial(trial, skipped_finetune=", ".join(
            f"{key} over its limit by {value:.4g}" for key, value in violated.items()))
    return bool(violated)


def _worth_timing(study: optuna.Study, accuracy: float, figures: Measurement,
                  margin: float, direction: str = MAXIMIZE) -> bool:
    """Whether the trial could join the front: no finished, measured trial has at least as
    good a metric, is as small and faster than even `margin` below the predicted latency.

    Only such trials are timed for real: the rest are dominated whatever their true latency
    within the model's error, and keep the prediction (what the front needs is measured).
    """
    optimistic = figures.latency_ms * (1 - margin)
    for other in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        values = other.values
        if (values and cost(values[0], direction) <= cost(accuracy, direction)
                and values[1] <= optimistic
                and values[2] <= figures.memory_mb and is_feasible(other)
                and TrialRecord.of(other).latency_source == "paired"):
            return False
    return True


def _rejected_before_pruning(trial: optuna.Trial, ctx: TrialContext,
                             predicted_ms: float) -> tuple[float, float, float]:
    """End a trial whose predicted latency breaks the limit: nothing is pruned or measured.

    The sampler gets the predicted excess; other hard limits, unknown without pruning, are
    recorded as met (the trial is infeasible anyway), and its objectives are the worst metric
    (accuracy 0; an infinite error), the predicted latency and the unpruned memory (an upper
    bound).
    """
    limit = ctx.constraints[LATENCY]
    excess = {key: 0.0 for key in hard_excess(ctx.baseline, ctx.constraints)}
    excess[LATENCY] = predicted_ms - limit
    for key, value in excess.items():
        trial.set_constraint(key, value)
    _record_accuracy_limits(trial, ctx, None)
    reason = f"predicted latency {predicted_ms:.4g} ms is over the {limit:.4g} ms limit"
    record_trial(trial, rejected_before_pruning=reason, skipped_finetune=reason)
    return objective_values(worst_value(ctx.task.direction),
                            replace(ctx.baseline, latency_ms=predicted_ms))
