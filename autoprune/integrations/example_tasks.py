"""Data for the two non-classification tasks the README and tests show, with no download.

- Regression: scikit-learn's bundled diabetes table (442 patients, 10 features, a disease
  progression score), standardised with the training split's statistics.
- Semantic segmentation: scenes of scikit-learn's 8x8 digits, enlarged and pasted on a dark
  canvas at random places, each pixel labelled with its digit's class + 1 (0 is background),
  fixed by a seed.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

SEGMENTATION_CLASSES = 11  # background + the ten digits


def diabetes_loaders(batch_size: int = 32, seed: int = 0,
                     val_fraction: float = 0.25) -> tuple[DataLoader, DataLoader]:
    """(train, val) loaders of (features [B, 10], target [B, 1]) from the diabetes table;
    features and target standardised with the training split's mean and std."""
    from sklearn.datasets import load_diabetes

    features, target = load_diabetes(return_X_y=True)
    x = torch.tensor(features, dtype=torch.float32)
    y = torch.tensor(target, dtype=torch.float32).unsqueeze(1)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    held = int(len(x) * val_fraction)
    train, val = order[held:], order[:held]
    mean, std = x[train].mean(0), x[train].std(0)
    y_mean, y_std = y[train].mean(), y[train].std()
    x, y = (x - mean) / std, (y - y_mean) / y_std
    generator = torch.Generator().manual_seed(seed)
    return (DataLoader(TensorDataset(x[train], y[train]), batch_size=batch_size, shuffle=True,
                       generator=generator),
            DataLoader(TensorDataset(x[val], y[val]), batch_size=batch_size))


def digit_scenes(count: int, size: int = 64, digits_per_scene: int = 3,
                 seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` RGB scenes [count, 3, size, size] and their label masks [count, size, size]:
    digits enlarged to size/4 pixels, pasted without overlap checks (a later digit covers an
    earlier one, in the image and the mask alike), plus a little noise."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    glyphs = torch.tensor(digits.images, dtype=torch.float32) / 16.0
    side = size // 4
    glyphs = F.interpolate(glyphs.unsqueeze(1), size=(side, side), mode="bilinear",
                           align_corners=False).squeeze(1)
    labels = torch.tensor(digits.target)
    generator = torch.Generator().manual_seed(seed)
    images = torch.zeros(count, size, size)
    masks = torch.zeros(count, size, size, dtype=torch.long)
    for scene in range(count):
        picks = torch.randint(len(glyphs), (digits_per_scene,), generator=generator)
        corners = torch.randint(size - side + 1, (digits_per_scene, 2), generator=generator)
        for pick, (top, left) in zip(picks.tolist(), corners.tolist()):
            glyph = glyphs[pick]
            ink = glyph > 0.3
            region = (slice(top, top + side), slice(left, left + side))
            images[scene][region] = torch.where(ink, glyph, images[scene][region])
            masks[scene][region] = torch.where(ink, labels[pick] + 1, masks[scene][region])
    images = images + 0.05 * torch.randn(images.shape, generator=generator)
    return images.unsqueeze(1).expand(-1, 3, -1, -1).contiguous(), masks


def segmentation_loaders(train_scenes: int = 256, val_scenes: int = 64, size: int = 64,
                         batch_size: int = 16, seed: int = 0) -> tuple[DataLoader, DataLoader]:
    """(train, val) loaders of (images, masks) digit scenes (`digit_scenes`), disjoint seeds."""
    train = TensorDataset(*digit_scenes(train_scenes, size, seed=seed))
    val = TensorDataset(*digit_scenes(val_scenes, size, seed=seed + 1))
    return (DataLoader(train, batch_size=batch_size, shuffle=True,
                       generator=torch.Generator().manual_seed(seed)),
            DataLoader(val, batch_size=batch_size))


def mean_iou(predicted: torch.Tensor, masks: torch.Tensor, classes: int) -> float:
    """Mean intersection over union of label maps, over the classes present in either."""
    scores = []
    for label in range(classes):
        mine, theirs = predicted == label, masks == label
        union = (mine | theirs).sum().item()
        if union:
            scores.append((mine & theirs).sum().item() / union)
    return sum(scores) / max(1, len(scores))


def scenes_mean_iou(val: Iterable, classes: int = SEGMENTATION_CLASSES) -> Callable:
    """An `evaluate(model)` for torchvision segmentation models (outputs under "out"): the
    mean IoU of their label maps over every scene of `val`. Named `miou`."""
    def miou(model: nn.Module) -> float:
        pairs = [(model(images)["out"].argmax(1), masks) for images, masks in val]
        return mean_iou(torch.cat([p for p, _ in pairs]), torch.cat([m for _, m in pairs]),
                        classes)
    return miou


def pixel_distillation(student_output: Any, teacher_output: Any, batch: Any,
                       alpha: float = 0.5) -> torch.Tensor:
    """A `distill` for segmentation: cross-entropy against the masks plus the per-pixel KL to
    the teacher's class distribution (averaged over pixels), weighted by `alpha`."""
    student, teacher = student_output["out"], teacher_output["out"]
    kd = F.kl_div(F.log_softmax(student, 1), F.log_softmax(teacher, 1), log_target=True,
                  reduction="batchmean") / student[0, 0].numel()
    return (1 - alpha) * F.cross_entropy(student, batch[1]) + alpha * kd
