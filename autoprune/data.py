"""Data helpers: the bundled digits task, and moving batches of any shape to a device."""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch.utils.data import DataLoader, TensorDataset

from .errors import InvalidInputError

DIGITS_CLASSES = 10


def digits_datasets(size: int = 32, channels: int = 3, seed: int = 0):
    """Train and validation `TensorDataset`s of scikit-learn's bundled 8x8 digits.

    The images are upsampled to `size` x `size` (bilinear) and repeated over `channels`, so
    ImageNet-style models run on them unchanged. The split is 80/20, stratified and fixed by
    `seed`, so every run and every worker sees the same validation set.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear",
                                             align_corners=False)
    images = ((images - 0.5) / 0.5).repeat(1, channels, 1, 1)
    labels = torch.tensor(digits.target, dtype=torch.long)
    train_idx, val_idx = train_test_split(
        torch.arange(len(labels)).numpy(), test_size=0.2, stratify=labels.numpy(), random_state=seed
    )
    train_idx, val_idx = torch.as_tensor(train_idx), torch.as_tensor(val_idx)
    return (TensorDataset(images[train_idx], labels[train_idx]),
            TensorDataset(images[val_idx], labels[val_idx]))


def digits_loaders(batch_size: int = 32, size: int = 32, channels: int = 3, seed: int = 0):
    """Train (shuffled) and validation loaders over the digits split of `digits_datasets`."""
    train, val = digits_datasets(size=size, channels=channels, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    return (DataLoader(train, batch_size=batch_size, shuffle=True, generator=generator),
            DataLoader(val, batch_size=batch_size))


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


def first_batch(loader: Iterable, name: str) -> tuple[Any, torch.Tensor]:
    """The first `(inputs, targets)` pair of `loader`, with a clear error if there is none."""
    if loader is None:
        raise InvalidInputError(f"`{name}` is required: an iterable of (inputs, targets) batches")
    try:
        iterator = iter(loader)
    except TypeError:
        raise InvalidInputError(
            f"`{name}` must be an iterable of (inputs, targets) batches, got {type(loader).__name__}"
        ) from None
    try:
        batch = next(iterator)
    except StopIteration:
        raise InvalidInputError(f"`{name}` is empty: it yielded no batch") from None
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise InvalidInputError(
            f"`{name}` must yield (inputs, targets) pairs; its first item is a "
            f"{type(batch).__name__}" + (f" of length {len(batch)}" if hasattr(batch, "__len__") else "")
        )
    return batch[0], batch[1]
