"""One trial, start to end: prune -> measure -> check constraints -> fine-tune (stopped early if a
faster trial is already better part-way, see early_stop.py) -> evaluate -> save.

Everything a trial learns is recorded on the Optuna trial, so a report, a resumed study or
another worker sees the same facts: objectives, constraint excesses, measured figures and
where the time went (`seconds_*` user attributes).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna
import torch
import torch.nn as nn

from ..console import ProgressBar
from ..pruning.grouping import PruningDimension
from ..pruning.prune import kept_out_channels, prune_copy
from ..runtime.evaluate import evaluate
from ..runtime.finetune import finetune
from ..runtime.measure import Measurement, measure
from ..runtime.model_io import logits_of
from ..store.artifacts import upload_checkpoint
from ..store.checkpoint import save_checkpoint
from .config import suggest_config
from .constraints import accuracy_excess, hard_excess
from .early_stop import screening_hook
from .space import SearchSpace


@dataclass
class TrialContext:
    """What every trial of one search shares; built once, before the first trial."""

    base_model: nn.Module
    example_inputs: Any
    dimensions: list[PruningDimension]
    ignored_names: list[str]
    space: SearchSpace
    train: Any
    val: Any
    device: torch.device
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


def objectives(accuracy: float, measurement: Measurement) -> tuple[float, float, float]:
    """The study's objectives in its directions: maximise accuracy, minimise latency and memory."""
    return accuracy, measurement.latency_ms, measurement.memory_mb


def run_trial(trial: optuna.Trial, ctx: TrialContext) -> tuple[float, float, float]:
    """Run one trial and return its objectives; raises (failing only this trial) on errors."""
    clock = time.perf_counter
    config = suggest_config(trial, ctx.space, ctx.dimensions)
    trial.set_user_attr("config", config.to_dict())

    start = clock()
    pruned = prune_copy(ctx.base_model, ctx.example_inputs, ctx.dimensions, config.sparsity,
                        config.criterion, ctx.ignored_names, ctx.space.round_to,
                        ctx.gradient_batches, ctx.loss_fn, logits_of, ctx.device)
    trial.set_user_attr("seconds_prune", clock() - start)
    trial.set_user_attr("kept_channels", kept_out_channels(pruned.model))

    start = clock()
    figures = measure(pruned.model, ctx.example_inputs, ctx.device, ctx.threads,
                      ctx.latency_run_time)
    trial.set_user_attr("seconds_measure", clock() - start)
    trial.set_user_attr("measurement", figures.to_dict())
    trial.set_user_attr("speedup", ctx.baseline.latency_ms / figures.latency_ms)
    trial.set_user_attr("mac_reduction", ctx.baseline.macs / max(1, figures.macs))

    excess = hard_excess(figures, ctx.constraints)
    for key, value in excess.items():
        trial.set_constraint(key, value)
    violated = {key: value for key, value in excess.items() if value > 0}
    if violated:
        # Not worth fine-tuning: the sampler learns from the excess, and we move on.
        drop_excess = accuracy_excess(ctx.baseline_accuracy, None, ctx.constraints)
        if drop_excess is not None:
            trial.set_constraint("max_accuracy_drop", drop_excess)
        trial.set_user_attr("skipped_finetune", ", ".join(
            f"{key} over its limit by {value:.4g}" for key, value in violated.items()))
        return objectives(0.0, figures)

    start = clock()
    screening = None if ctx.early_stop_margin is None else screening_hook(
        trial, ctx.finetune_steps, figures.latency_ms, ctx.early_stop_margin,
        lambda: evaluate(pruned.model, ctx.val, ctx.device, ctx.metric))
    with ProgressBar(f"trial {trial.number} fine-tuning", total=ctx.finetune_steps,
                     leave=False) as bar:
        train_loss = finetune(pruned.model, ctx.base_model, ctx.train, ctx.finetune_steps,
                              config.lr, config.distillation, ctx.device, ctx.loss_fn,
                              ctx.space.optimizer, on_step=screening,
                              on_progress=lambda step, loss: bar.update(1, loss=loss))
    trial.set_user_attr("seconds_finetune", clock() - start)
    trial.set_user_attr("train_loss", train_loss)

    start = clock()
    stopped = trial.user_attrs.get("stopped_early")  # then the weights are those just screened
    accuracy = trial.user_attrs["screen_accuracy"] if stopped else evaluate(
        pruned.model, ctx.val, ctx.device, ctx.metric)
    trial.set_user_attr("seconds_evaluate", clock() - start)
    drop_excess = accuracy_excess(ctx.baseline_accuracy, accuracy, ctx.constraints)
    if drop_excess is not None:
        trial.set_constraint("max_accuracy_drop", drop_excess)

    start = clock()
    with tempfile.TemporaryDirectory(prefix="autoprune-trial-") as staging:
        save_checkpoint(staging, pruned.model, ctx.base_model, pruned.history, ctx.example_inputs,
                        extra={"trial": trial.number, "config": config.to_dict(),
                               "measurement": figures.to_dict(), "accuracy": accuracy})
        upload_checkpoint(trial, Path(staging), ctx.artifact_store)
    trial.set_user_attr("seconds_save", clock() - start)
    return objectives(accuracy, figures)
