"""Recover a pruned model's accuracy: brief fine-tuning with distillation from the original.

The loss is `(1 - alpha) * hard_loss(student, targets) + alpha * T^2 * KL(teacher_T || student_T)`
(Hinton et al., 2015): the T^2 factor keeps the KD gradients on the scale of the hard loss
whatever the temperature. The teacher is the unpruned model, frozen in eval mode.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import TrialFailure
from .model_io import logits_of, run_model, to_device


@dataclass(frozen=True)
class Distillation:
    """Weight of the KD term (`alpha`, 0 = plain fine-tuning) and the softmax temperature."""

    alpha: float = 0.5
    temperature: float = 4.0


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      temperature: float) -> torch.Tensor:
    student = F.log_softmax(student_logits / temperature, dim=-1)
    teacher = F.log_softmax(teacher_logits / temperature, dim=-1)
    return F.kl_div(student, teacher, log_target=True, reduction="batchmean") * temperature ** 2


def distilled_loss(student: nn.Module, teacher: nn.Module, inputs, targets,
                   distillation: Distillation, loss_fn: Callable = F.cross_entropy) -> torch.Tensor:
    """The training loss of one batch: hard loss and KD term weighted by `alpha`."""
    logits = logits_of(run_model(student, inputs))
    loss = loss_fn(logits, targets) if distillation.alpha < 1 else logits.new_zeros(())
    if distillation.alpha > 0:
        with torch.no_grad():
            teacher_logits = logits_of(run_model(teacher, inputs))
        kd = distillation_loss(logits, teacher_logits, distillation.temperature)
        loss = (1 - distillation.alpha) * loss + distillation.alpha * kd
    return loss


def classification_loss(loss_fn: Callable = F.cross_entropy) -> Callable:
    """The built-in batch loss: `loss_fn` + distillation on the logits of an `(inputs,
    targets)` batch, as a `(student, teacher, batch, distillation) -> loss` callable."""
    def batch_loss(student, teacher, batch, distillation):
        inputs, targets = batch
        return distilled_loss(student, teacher, inputs, targets, distillation, loss_fn)
    return batch_loss


def training_step(student: nn.Module, teacher: nn.Module, batch, optimizer, schedule,
                  distillation: Distillation, batch_loss: Callable, where: str) -> float:
    """One optimiser step on one batch (already on the device); returns its loss. A
    non-finite loss raises `TrialFailure` at once (`where` says at which step): the weights
    are already ruined."""
    loss = batch_loss(student, teacher, batch, distillation)
    value = loss.item()
    if not math.isfinite(value):
        raise TrialFailure(f"fine-tuning loss became {value} {where}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    schedule.step()
    return value


def cycle_batches(loader: Iterable, steps: int):
    """`steps` batches from `loader`, starting it again as often as needed."""
    produced = 0
    while produced < steps:
        empty = True
        for batch in itertools.islice(loader, steps - produced):
            empty = False
            produced += 1
            yield batch
        if empty:
            return


def make_optimizer(name: str, parameters, lr: float) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum (what ResNets are trained with) or AdamW (robust elsewhere)."""
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=0.01)
    raise ValueError(f"unknown optimizer {name!r}: use 'sgd' or 'adamw'")


def finetune(student: nn.Module, teacher: nn.Module, train: Iterable, steps: int, lr: float,
             distillation: Distillation, device: str | torch.device,
             batch_loss: Callable | None = None, optimizer: str = "adamw",
             on_step: Callable[[int], bool] | None = None,
             on_progress: Callable[[int, float], None] | None = None) -> float:
    """Train `student` for `steps` batches of `train` with a cosine learning-rate schedule.

    `batch_loss(student, teacher, batch, distillation)` is one batch's loss (default: the
    built-in classification loss). Returns the mean loss of the last steps. A non-finite loss raises `TrialFailure` at once:
    the weights are already ruined, and the trial records the step. `on_step(n)` is called
    after step n (it may evaluate the student); when it returns True, training stops.
    `on_progress(n, loss)` is told each step's loss (for a progress bar).
    """
    student.to(device).train()
    teacher.to(device).eval()
    if steps <= 0:
        return float("nan")
    optimizer = make_optimizer(optimizer, student.parameters(), lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    batch_loss = batch_loss or classification_loss()
    recent: list[float] = []
    for step, batch in enumerate(cycle_batches(train, steps)):
        value = training_step(student, teacher, to_device(batch, device), optimizer, schedule,
                              distillation, batch_loss, f"at step {step + 1} of {steps} (lr={lr:.3g}); this "
                                       "configuration diverged")
        recent = (recent + [value])[-10:]
        if on_progress is not None:
            on_progress(step + 1, value)
        if on_step is not None:
            if on_step(step + 1):
                break
            student.train()  # on_step may have evaluated it
    student.eval()
    return sum(recent) / max(1, len(recent))
