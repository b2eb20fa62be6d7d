"""What goes into a model and comes out of it, whatever the model family.

Batches may be tensors, tuples or dicts (HuggingFace models take keyword arguments), and
outputs may be tensors, tuples, dicts or HuggingFace `ModelOutput`s. Every step of a trial
(pruning, timing, fine-tuning, evaluation) goes through these helpers.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.nn as nn

from ..errors import InvalidInputError


def run_model(model: nn.Module, inputs: Any) -> Any:
    """`model(inputs)`, unpacking a dict into keyword arguments (HuggingFace style)."""
    if isinstance(inputs, dict):
        return model(**inputs)
    return model(inputs)


def run_hooked(model: nn.Module, inputs: Any, hooks: list) -> None:
    """One inference pass that feeds the forward `hooks` (handles already registered),
    which are removed afterwards whatever happens."""
    try:
        with torch.inference_mode():
            run_model(model, inputs)
    finally:
        for hook in hooks:
            hook.remove()


def output_tensors(output: Any) -> list[torch.Tensor]:
    """Every tensor in a model's output (tensor, tuple, dict or HuggingFace ModelOutput).

    Given to Torch-Pruning as its `output_transform`: it traces from each tensor, and cannot
    walk other objects models return (GPT-2's key/value cache).
    """
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (list, tuple)):
        return [tensor for item in output for tensor in output_tensors(item)]
    return []


def logits_of(output: Any) -> torch.Tensor:
    """The logits tensor in a model's output: itself, `.logits` (HuggingFace) or the first item."""
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, dict) and "logits" in output:
        return output["logits"]
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"cannot find logits in a model output of type {type(output).__name__}")


def to_device(batch: Any, device: torch.device | str) -> Any:
    """`batch` with every tensor in it (nested in tuples, lists or dicts) moved to `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {key: to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(value, device) for value in batch)
    return batch


def batch_size_of(inputs: Any) -> int:
    """The leading dimension of the first tensor found in `inputs`."""
    if isinstance(inputs, torch.Tensor):
        return inputs.shape[0]
    values = inputs.values() if isinstance(inputs, dict) else inputs
    for value in values:
        if isinstance(value, torch.Tensor):
            return value.shape[0]
    raise InvalidInputError("inputs contain no tensor, so their batch size is unknown")


def any_batch(loader: Iterable, name: str) -> Any:
    """The first item of `loader`, whatever it is, with a clear error if there is none."""
    if loader is None:
        raise InvalidInputError(f"`{name}` is required: an iterable of batches")
    try:
        iterator = iter(loader)
    except TypeError:
        raise InvalidInputError(
            f"`{name}` must be an iterable of batches, got {type(loader).__name__}") from None
    try:
        return next(iterator)
    except StopIteration:
        raise InvalidInputError(f"`{name}` is empty: it yielded no batch") from None


def first_batch(loader: Iterable, name: str) -> tuple[Any, torch.Tensor]:
    """The first `(inputs, targets)` pair of `loader`, with a clear error if there is none."""
    if loader is None:
        raise InvalidInputError(f"`{name}` is required: an iterable of (inputs, targets) batches")
    try:
        iter(loader)
    except TypeError:
        raise InvalidInputError(
            f"`{name}` must be an iterable of (inputs, targets) batches, got {type(loader).__name__}"
        ) from None
    batch = any_batch(loader, name)
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise InvalidInputError(
            f"`{name}` must yield (inputs, targets) pairs; its first item is a "
            f"{type(batch).__name__}" + (f" of length {len(batch)}" if hasattr(batch, "__len__") else "")
        )
    return batch[0], batch[1]


def resolve_device(device: str | torch.device) -> torch.device:
    """`device` as a `torch.device`, refused with a clear message when it cannot be used."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise InvalidInputError(f"unknown device {device!r}: use 'cpu' or 'cuda'") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError("device='cuda' was asked for, but PyTorch sees no CUDA GPU; "
                                "use device='cpu'")
    if device.type not in ("cpu", "cuda"):
        raise InvalidInputError(f"device {device!r} is not supported yet: use 'cpu' or 'cuda'")
    return device
