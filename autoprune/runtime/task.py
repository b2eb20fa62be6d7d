"""What a trial trains and scores: the task contract.

A search needs two things from a task: a score for a model (its metric, and whether higher or
lower is better) and the loss of one training batch. The built-in classifier (top-1 accuracy,
cross-entropy + distillation on the logits) is one implementation; a user's `evaluate`,
`train_step` or `distill` make another, for regression, segmentation or anything whose
quality needs its own pass over its own data. Everything around them (optimizer, schedule,
step budget, early stopping, NaN handling, the front) is the product's and follows the
direction.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import InvalidInputError, TrialFailure
from .evaluate import evaluate, top1_accuracy
from .finetune import Distillation, classification_loss
from .model_io import run_model

logger = logging.getLogger(__name__)

MAXIMIZE, MINIMIZE = "maximize", "minimize"
DIRECTIONS = (MAXIMIZE, MINIMIZE)


def cost(value: float, direction: str) -> float:
    """`value` as a cost (lower is better) under `direction`."""
    return -value if direction == MAXIMIZE else value


def worsening(baseline: float, value: float, direction: str) -> float:
    """How much worse `value` is than `baseline` (negative: better), in the metric's units."""
    return cost(value, direction) - cost(baseline, direction)


def worst_value(direction: str) -> float:
    """The objective of a trial that was never evaluated (rejected before fine-tuning)."""
    return 0.0 if direction == MAXIMIZE else math.inf


@dataclass(frozen=True)
class Task:
    """How models are scored and trained in one search.

    `score(model)` runs with the model on the search's device in eval mode, gradients off.
    `loss(student, teacher, batch, distillation)` is one training batch's loss (the batch on
    the device). `searches_distillation`: whether the trial's distillation weight and
    temperature mean anything (a user's training step owns its own loss).
    """

    score: Callable[[nn.Module], float]
    loss: Callable[[nn.Module, nn.Module, Any, Distillation], torch.Tensor]
    direction: str = MAXIMIZE
    metric_name: str = "accuracy"
    top1: bool = True  # top-1 accuracy: shown as a percentage, its chance level sets a floor
    searches_distillation: bool = True

    def describe(self) -> dict:
        """What the study records, so a report or a resumed study reads the metric right."""
        return {"name": self.metric_name, "direction": self.direction, "percent": self.top1}


def classification_task(val: Iterable, device, metric: Callable | None = None,
                        loss_fn: Callable | None = None) -> Task:
    """The built-in classifier: `metric(logits, targets)` per batch of `val` (top-1 by
    default), `loss_fn` + distillation on the logits of `(inputs, targets)` batches."""
    metric = metric or top1_accuracy
    top1 = metric is top1_accuracy
    return Task(score=lambda model: evaluate(model, val, device, metric),
                loss=classification_loss(loss_fn or F.cross_entropy),
                metric_name="accuracy" if top1 else _name_of(metric),
                top1=top1)


def user_task(evaluate_fn: Callable[[nn.Module], float], direction: str = MAXIMIZE,
              train_step: Callable | None = None, distill: Callable | None = None,
              metric_name: str | None = None, loss_fn: Callable | None = None) -> Task:
    """The user's contract: `evaluate(model) -> float` with its `direction`, and one of
    `train_step(student, teacher, batch) -> loss` or `distill(student_output,
    teacher_output, batch) -> loss` (the model runs on `batch[0]`); neither: the built-in
    cross-entropy + distillation on `(inputs, targets)` batches."""
    check_direction(direction)
    if train_step is not None and distill is not None:
        raise InvalidInputError("give train_step= or distill=, not both: train_step owns the "
                                "whole loss, distill only the loss on the two outputs")
    for name, function in (("evaluate", evaluate_fn), ("train_step", train_step),
                           ("distill", distill)):
        if function is not None and not callable(function):
            raise InvalidInputError(f"{name} must be callable, got {type(function).__name__}")

    def score(model):
        return float(evaluate_fn(model))

    if train_step is not None:
        def loss(student, teacher, batch, distillation):
            return train_step(student, teacher, batch)
    elif distill is not None:
        def loss(student, teacher, batch, distillation):
            inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
            output = run_model(student, inputs)
            with torch.no_grad():
                teacher_output = run_model(teacher, inputs)
            return distill(output, teacher_output, batch)
    else:
        loss = classification_loss(loss_fn or F.cross_entropy)

    return Task(score=score, loss=loss, direction=direction,
                metric_name=metric_name or _name_of(evaluate_fn),
                top1=False, searches_distillation=train_step is None and distill is None)


ACCURACY = {"name": "accuracy", "direction": MAXIMIZE, "percent": True}


def metric_of(study) -> dict:
    """The metric a study ranks by, as `Task.describe` recorded it (studies from before the
    task contract: top-1 accuracy)."""
    settings = study.user_attrs.get("settings") or {}
    return {**ACCURACY, **(settings.get("metric") or {})}


def show_metric(value: float | None, metric: dict, digits: int = 2) -> str:
    """`value` as shown to users: a percentage for a share like top-1, else the number."""
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.{digits}%}" if metric.get("percent") else f"{value:.4g}"


def _name_of(evaluate_fn: Callable) -> str:
    """The metric's name: its function's (`rmse`, `miou`), 'metric' for a lambda."""
    name = getattr(evaluate_fn, "__name__", "")
    return name if name.isidentifier() else "metric"


def check_direction(direction: Any) -> None:
    if direction not in DIRECTIONS:
        raise InvalidInputError(f"direction must be 'maximize' or 'minimize', got {direction!r}")


def scored(task: Task, model: nn.Module, device) -> float:
    """`task.score(model)` with the model on `device` in eval mode and gradients off; a
    non-finite score fails the trial (a NaN cannot be ranked)."""
    model.to(device).eval()
    with torch.no_grad():
        value = task.score(model)
    if not math.isfinite(value):
        raise TrialFailure(f"the {task.metric_name} is {value}: the model cannot be ranked")
    return value


def check_training_loss(task: Task, model: nn.Module, batch: Any, name: str) -> None:
    """Run the training loss once, with its backward pass, on a copy of `model` in training
    mode (its BatchNorm statistics change there, not in `model`, the teacher): a batch the
    trials could not train on fails now, once, not in every trial."""
    student = copy.deepcopy(model).train()
    try:
        loss = task.loss(student, model.eval(), batch, Distillation())
    except torch.OutOfMemoryError:  # the unpruned student is the largest: pruned ones may fit
        logger.warning("autoprune: training the unpruned model on the first batch ran out of "
                       "memory; the search goes on, as pruned models need less")
        return
    except Exception as err:
        raise InvalidInputError(f"{name} fails on the first training batch "
                                f"({type(err).__name__}: {err})") from err
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1 or not loss.is_floating_point():
        shown = (f"a tensor of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor)
                 else f"a {type(loss).__name__}")
        raise InvalidInputError(f"{name} must return a scalar float tensor (the "
                                f"batch's loss), got {shown}")
    if not loss.requires_grad:
        raise InvalidInputError(f"{name} returned a loss without a gradient: compute "
                                "it from the student's output")
    if not math.isfinite(loss.item()):
        raise InvalidInputError(f"{name} returned {loss.item()} on the first training batch "
                                "(check the training data for NaN or infinite values)")
    try:
        loss.backward()
    except Exception as err:
        raise InvalidInputError(f"the backward pass of {name} fails on the first training "
                                f"batch ({type(err).__name__}: {err})") from err


def check_task(task: Task, model: nn.Module, batch: Any, device,
               names: dict[str, str]) -> float:
    """Run the task once on the unpruned model before any work: its score must be a finite
    number and its loss a finite scalar tensor with a gradient. The loss runs on a copy in
    training mode (a forward pass there updates BatchNorm statistics), `model` the teacher.
    `names` says which of the user's callables each part is, for the message. Returns the
    unpruned score."""
    try:
        value = scored(task, model, device)
    except TrialFailure as err:
        raise InvalidInputError(f"{names['score']} on the unpruned model: {err}") from None
    except Exception as err:
        raise InvalidInputError(f"{names['score']} fails on the unpruned model "
                                f"({type(err).__name__}: {err})") from err
    check_training_loss(task, model, batch, names["loss"])
    return value
