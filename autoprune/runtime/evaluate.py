"""Score a model on the validation data with the user's metric (top-1 accuracy by default)."""

from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.nn as nn

from .model_io import logits_of, run_model, to_device


def top1_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of rows whose highest logit is the target class."""
    return (logits.argmax(dim=-1) == targets).float().mean().item()


def evaluate(model: nn.Module, loader: Iterable, device: str | torch.device,
             metric: Callable[[torch.Tensor, torch.Tensor], float] = top1_accuracy) -> float:
    """The batch-size-weighted mean of `metric(logits, targets)` over `loader`.

    A custom metric must be a per-batch mean (like accuracy) for the weighting to be right;
    higher must be better.
    """
    model.to(device).eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for inputs, targets in loader:
            inputs, targets = to_device(inputs, device), to_device(targets, device)
            logits = logits_of(run_model(model, inputs))
            size = targets.shape[0] if hasattr(targets, "shape") else len(targets)
            total += float(metric(logits, targets)) * size
            count += size
    if count == 0:
        raise ValueError("the validation loader yielded no batch")
    return total / count
