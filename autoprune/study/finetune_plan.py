"""How many fine-tuning steps each trial gets, decided once per study by its first process."""

from __future__ import annotations

import copy
import logging
import time
from typing import Callable, Iterable

import torch
import torch.nn as nn

from ..runtime.finetune import Distillation, finetune
from .budget import Budget

logger = logging.getLogger(__name__)


def epoch_steps(train: Iterable) -> int:
    """Batches in one pass over `train` (50 for an iterable without a length)."""
    try:
        return max(1, len(train))  # type: ignore[arg-type]
    except TypeError:
        return 50


def _training_step_seconds(student: nn.Module, teacher: nn.Module, train: Iterable,
                           device: torch.device, loss_fn: Callable, optimizer: str) -> float:
    """Seconds per KD fine-tuning step of `student` (a copy; its weights are thrown away)."""
    student = copy.deepcopy(student)
    finetune(student, teacher, train, 1, 1e-4, Distillation(), device, loss_fn, optimizer)
    start = time.perf_counter()
    finetune(student, teacher, train, 3, 1e-4, Distillation(), device, loss_fn, optimizer)
    return (time.perf_counter() - start) / 3


def choose_finetune_steps(budget: Budget, train: Iterable, typical_student: nn.Module,
                          teacher: nn.Module, device: torch.device, loss_fn: Callable,
                          optimizer: str, target_trials: int = 15,
                          max_epochs: int = 3) -> int:
    """Fine-tuning steps per trial: one epoch for a trial budget; else what fits the time.

    A time budget is split into `target_trials` trials, 70 % of each spent fine-tuning, at the
    step time of `typical_student` (the model pruned uniformly at the middle reference
    ratio), between 10 steps and `max_epochs` epochs.
    """
    epoch = epoch_steps(train)
    if budget.seconds is None:
        return epoch
    step = _training_step_seconds(typical_student, teacher, train, device, loss_fn, optimizer)
    steps = int(0.7 * budget.seconds / target_trials / step)
    chosen = max(10, min(max_epochs * epoch, steps))
    logger.info(f"fine-tuning: {chosen} steps per trial ({chosen / epoch:.2f} epochs; a step of a "
                f"typical pruned model takes {step * 1e3:.0f} ms)")
    return chosen
