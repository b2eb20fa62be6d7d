"""The unpruned model, measured once per study: every trial's speedup and accuracy drop are
relative to it. Its figures and the run's settings are recorded for every worker and reader."""

from __future__ import annotations

import logging
import os
import platform
from datetime import datetime
from typing import Any, Iterable

import optuna
import torch

from ..console import ProgressBar
from ..integrations.models import model_source
from ..pruning.prune import kept_out_channels
from ..runtime.task import Task, scored, show_metric
from ..runtime.measure import measure
from ..targets.base import Target
from ..runtime.model_io import batch_size_of
from ..store.records import StudyRecord, record_study
from .finetune_plan import epoch_steps
from .prepared import PreparedModel
from .space import model_identifiers

logger = logging.getLogger(__name__)


def library_versions() -> dict[str, str]:
    import timm
    import torch_pruning

    return {"python": platform.python_version(), "torch": torch.__version__,
            "optuna": optuna.__version__, "torch_pruning": getattr(torch_pruning, "__version__", "?"),
            "timm": timm.__version__, "autoprune": __import__("autoprune").__version__,
            "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, "
                       f"{os.cpu_count()} CPUs"}


def describe_data(train: Iterable, val: Iterable) -> dict[str, Any]:
    def size(loader):
        dataset = getattr(loader, "dataset", None)
        try:
            return len(dataset) if dataset is not None else None
        except TypeError:
            return None

    return {"train_samples": size(train), "val_samples": size(val),
            "train_batches": epoch_steps(train)}


def measure_baseline(study: optuna.Study, prepared: PreparedModel, task: Task,
                     target: Target, rounds: int, block_seconds: float,
                     settings: dict[str, Any]) -> dict[str, Any]:
    """The study's unpruned figures, measured now unless a process already did (then reused).

    Its latency is the study's reference: every trial's paired speedup is applied to it. The
    first process to measure also records the model's widths and the run's `settings`.
    """
    baseline = StudyRecord.of(study).baseline
    if baseline is None:  # also a worker whose creator died before measuring it
        model, device = prepared.model, prepared.device
        logger.info("measuring the unpruned model ...")
        with ProgressBar("unpruned model", total=2) as bar:
            accuracy = scored(task, model, device)
            bar.update(1)
            figures = measure(model, prepared.example_inputs, target, rounds, block_seconds)
            bar.update(1)
        baseline = {"accuracy": accuracy, **figures.to_dict()}
        record_study(study, base_channels=kept_out_channels(model), settings={
            "model": model_identifiers(model)[0], "model_source": model_source(model),
            "space": prepared.space.fingerprint(),
            "dimensions": [d.to_dict() for d in prepared.dimensions],
            "device": str(device), "target": target.describe(), "threads": target.threads,
            "batch_size": batch_size_of(prepared.example_inputs),
            "started": datetime.now().isoformat(timespec="seconds"),
            "versions": library_versions(), **settings})
        record_study(study, baseline=baseline)
    logger.info(f"unpruned: {task.metric_name} {show_metric(baseline['accuracy'], task.describe())}"
                f", latency "
                f"{baseline['latency_ms']:.2f} ms at batch {batch_size_of(prepared.example_inputs)}"
                f", memory {baseline['memory_mb']:.1f} MiB, {baseline['params'] / 1e6:.2f} M "
                f"params, {baseline['macs'] / 1e6:.1f} M MACs")
    return baseline
