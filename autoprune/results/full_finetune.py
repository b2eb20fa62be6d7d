"""Fine-tune a picked model for real: whole epochs of distillation from the original model
under a cosine schedule, evaluated after each epoch, the best epoch kept, and resumed from the
last completed epoch after Ctrl-C or a crash.

A trial fine-tunes for a few dozen steps: enough to rank configurations, not to ship one.
`SearchResult.finetune` runs this loop from the trial's brief checkpoint and stores the result
beside it (the brief one is kept), so `load`, `export`, `best` and the report use it from then
on. The state of a run in progress lives in a work directory: the last and best weights
(safetensors), the optimizer and schedule (tensors only, loaded with `weights_only=True`) and
a JSON progress file written last, so a kill at any moment leaves the last completed epoch.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn as nn
from safetensors.torch import save_model

from ..console import ProgressBar
from ..errors import InvalidInputError
from ..runtime.finetune import Distillation, make_optimizer, training_step
from ..runtime.model_io import to_device
from ..runtime.task import Task, cost, scored
from ..store.checkpoint import atomic_write_text, load_weights_file
from ..study.finetune_plan import epoch_steps

PROGRESS_FILE = "progress.json"
LAST_WEIGHTS, BEST_WEIGHTS, OPTIMIZER_STATE = "last.safetensors", "best.safetensors", "optimizer.pt"


@dataclass(frozen=True)
class FinetuneSettings:
    """What a full fine-tune does; a resumed run must be asked for the same."""

    epochs: int
    lr: float
    alpha: float
    temperature: float
    optimizer: str

    @property
    def distillation(self) -> Distillation:
        return Distillation(self.alpha, self.temperature)


def check_settings(settings: FinetuneSettings) -> None:
    """Refuse bad settings before any work, each with its reason."""
    if isinstance(settings.epochs, bool) or not isinstance(settings.epochs, int) \
            or settings.epochs < 1:
        raise InvalidInputError(f"epochs must be a whole number of at least 1, got "
                                f"{settings.epochs!r}")
    if not (isinstance(settings.lr, (int, float)) and settings.lr > 0 and math.isfinite(settings.lr)):
        raise InvalidInputError(f"lr must be a positive number, got {settings.lr!r}")
    if not 0 <= settings.alpha <= 1:
        raise InvalidInputError(f"alpha must lie in [0, 1], got {settings.alpha!r}")
    if not settings.temperature > 0:
        raise InvalidInputError(f"temperature must be positive, got {settings.temperature!r}")
    if settings.optimizer not in ("sgd", "adamw"):
        raise InvalidInputError(f"optimizer must be 'sgd' or 'adamw', got {settings.optimizer!r}")


def _read_progress(work_dir: Path, settings: FinetuneSettings, restart: bool) -> dict | None:
    """The progress of an earlier run with the same settings, or None to start afresh."""
    path = work_dir / PROGRESS_FILE
    if restart or not path.is_file():
        shutil.rmtree(work_dir, ignore_errors=True)
        return None
    progress = json.loads(path.read_text())
    if progress["settings"] != asdict(settings):
        raise InvalidInputError(
            f"{work_dir} holds a fine-tune with other settings ({progress['settings']}); ask for "
            "the same to resume it, or restart=True (--restart) to begin again")
    return progress


def finetune_pick(student: nn.Module, teacher: nn.Module, train: Iterable, task: Task,
                  settings: FinetuneSettings, work_dir: Path, device: torch.device,
                  restart: bool = False,
                  on_epoch: Callable[[int, float], None] | None = None) -> dict:
    """Fine-tune `student` in place for `settings.epochs` passes over `train` with the task's
    loss, scoring each epoch with the task's metric; returns the progress record (per-epoch
    loss and metric, the best epoch in the metric's direction). The student ends with the
    best epoch's weights. `on_epoch(epoch, metric)` is told each completed epoch."""
    work_dir = Path(work_dir)
    progress = _read_progress(work_dir, settings, restart)
    student.to(device)
    teacher.to(device).eval()
    steps_per_epoch = epoch_steps(train)
    optimizer = make_optimizer(settings.optimizer, student.parameters(), settings.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=settings.epochs * steps_per_epoch)
    if progress is None:
        progress = {"settings": asdict(settings), "completed": 0, "history": [],
                    "best_epoch": 0, "best_metric": scored(task, student, device)}
        work_dir.mkdir(parents=True, exist_ok=True)
        save_model(student, str(work_dir / BEST_WEIGHTS))  # the brief weights, epoch 0
    else:
        load_weights_file(student, work_dir / LAST_WEIGHTS)
        state = torch.load(work_dir / OPTIMIZER_STATE, map_location=device, weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
    for epoch in range(progress["completed"] + 1, settings.epochs + 1):
        loss = _one_epoch(student, teacher, train, optimizer, schedule, settings, device,
                          task.loss, f"epoch {epoch}/{settings.epochs}", steps_per_epoch)
        score = scored(task, student, device)
        progress["history"].append({"epoch": epoch, "loss": loss, "metric": score})
        if cost(score, task.direction) < cost(progress["best_metric"], task.direction):
            progress.update(best_epoch=epoch, best_metric=score)
            save_model(student, str(work_dir / BEST_WEIGHTS))
        save_model(student, str(work_dir / LAST_WEIGHTS))
        torch.save({"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict()},
                   work_dir / OPTIMIZER_STATE)
        progress["completed"] = epoch
        atomic_write_text(work_dir / PROGRESS_FILE, json.dumps(progress, indent=1))
        if on_epoch is not None:
            on_epoch(epoch, score)
    load_weights_file(student, work_dir / BEST_WEIGHTS)
    return progress


def _one_epoch(student: nn.Module, teacher: nn.Module, train: Iterable, optimizer, schedule,
               settings: FinetuneSettings, device: torch.device, batch_loss: Callable,
               label: str, steps: int) -> float:
    """One pass over `train`; the mean loss. A non-finite loss stops the run at once
    (`TrialFailure`): the last completed epoch is kept."""
    student.train()
    total, count = 0.0, 0
    with ProgressBar(label, total=steps, leave=False) as bar:
        for batch in train:
            value = training_step(student, teacher, to_device(batch, device), optimizer,
                                  schedule, settings.distillation, batch_loss,
                                  f"in {label} (lr {settings.lr:.3g}): lower the learning rate")
            total, count = total + value, count + 1
            bar.update(1, loss=value)
    student.eval()
    return total / max(1, count)


def kendall_tau(first: list[float], second: list[float]) -> float:
    """Kendall's tau-b of two rankings of the same items (ties counted as neither)."""
    concordant = discordant = ties_first = ties_second = 0
    for i in range(len(first)):
        for j in range(i + 1, len(first)):
            a, b = first[i] - first[j], second[i] - second[j]
            if a == 0 and b == 0:
                continue
            if a == 0:
                ties_first += 1
            elif b == 0:
                ties_second += 1
            elif (a > 0) == (b > 0):
                concordant += 1
            else:
                discordant += 1
    pairs = concordant + discordant
    denominator = math.sqrt((pairs + ties_first) * (pairs + ties_second))
    return (concordant - discordant) / denominator if denominator else float("nan")
