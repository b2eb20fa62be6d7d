"""The bundled demo task: scikit-learn's 8x8 digits, upsampled for ImageNet-style models."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset

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
