"""Your own data on the command line: a folder of images or a `module:function`.

`--data DIR`: torchvision's ImageFolder layout, one sub-folder of images per class, either as
`DIR/train/<class>/` and `DIR/val/<class>/`, or as `DIR/<class>/` split into train and
validation by `--val-fraction` (stratified, with a fixed seed). Images get the model's own
preprocessing (timm's `resolve_data_config` / `create_transform`, evaluation mode; a
HuggingFace directory's image processor settings) at `--image-size`. `--data module:function`: anything else; the function (imported from the
current directory or the Python path) returns `(train_loader, val_loader)`, the same contract
as `search()`.

Every check runs before a model is trained or a study is opened, and each names the problem:
a path that is not there, no class folders, a class folder without images, a file that is not a
readable image, classes that differ between train/ and val/, a function that does not return
two loaders.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Subset

from ..errors import InvalidInputError
from .bundled_data import BUNDLED_DATA

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class FolderLayout:
    """What an image folder holds, found by listing it (no image is opened)."""

    root: Path
    classes: list[str]
    train_dir: Path
    val_dir: Path | None     # None: one folder, split by --val-fraction
    images: int

    @property
    def key(self) -> str:
        """A short name that changes when the files do (for the trained-model cache)."""
        digest = hashlib.sha256()
        for directory in filter(None, (self.train_dir, self.val_dir)):
            for path in sorted(directory.rglob("*")):
                if path.suffix.lower() in IMAGE_SUFFIXES:
                    digest.update(f"{path.relative_to(self.root)}:{path.stat().st_size}".encode())
        return f"{self.root.name or 'data'}-{digest.hexdigest()[:8]}"


def is_function_spec(spec: str) -> bool:
    """`module:function`, not a path that happens to hold a colon."""
    module, _, function = spec.partition(":")
    return bool(module and function) and not Path(spec).exists() and \
        all(part.isidentifier() for part in module.split(".")) and function.isidentifier()


def _class_images(directory: Path) -> dict[str, int]:
    """Images per class sub-folder of `directory`; an error naming an empty class."""
    classes = sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise InvalidInputError(f"--data {directory}: no class folders in it; the layout is "
                                "DIR/<class>/<images> or DIR/train/<class>/ and DIR/val/<class>/")
    counts = {}
    for folder in classes:
        counts[folder.name] = sum(1 for p in folder.rglob("*")
                                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if counts[folder.name] == 0:
            raise InvalidInputError(f"--data: class folder {folder} holds no images "
                                    f"({', '.join(IMAGE_SUFFIXES)}); remove it or add images")
    return counts


def inspect_folder(path: str | Path) -> FolderLayout:
    """The layout of an image folder, checked."""
    root = Path(path)
    if not root.exists():
        raise InvalidInputError(f"--data {path}: no such directory, and not a bundled task "
                                f"({', '.join(BUNDLED_DATA)}) or a module:function")
    if not root.is_dir():
        raise InvalidInputError(f"--data {path}: a file; give a directory of class folders")
    train_dir, val_dir = root / "train", root / "val"
    if train_dir.is_dir() and val_dir.is_dir():
        train, val = _class_images(train_dir), _class_images(val_dir)
        if set(train) != set(val):
            only_train, only_val = sorted(set(train) - set(val)), sorted(set(val) - set(train))
            raise InvalidInputError(
                f"--data {path}: train/ and val/ have different classes" +
                (f"; only in train/: {', '.join(only_train)}" if only_train else "") +
                (f"; only in val/: {', '.join(only_val)}" if only_val else ""))
        return FolderLayout(root, sorted(train), train_dir, val_dir,
                            sum(train.values()) + sum(val.values()))
    counts = _class_images(root)
    if len(counts) < 2:
        raise InvalidInputError(f"--data {path}: one class folder ({next(iter(counts))}); a "
                                "classifier needs at least two")
    return FolderLayout(root, sorted(counts), root, None, sum(counts.values()))


def preprocessing(model: nn.Module, image_size: int | None):
    """The model's evaluation transform at `image_size` (its own default if None): timm's
    data config for a timm model, a HuggingFace directory's preprocessor_config.json, else
    ImageNet's mean and std at 224 (torchvision's convention)."""
    from timm.data import create_transform, resolve_data_config

    args = _huggingface_preprocessing(model)
    if image_size:
        args["input_size"] = (3, image_size, image_size)
    return create_transform(**resolve_data_config(args, model=model), is_training=False)


def _huggingface_preprocessing(model: nn.Module) -> dict:
    """timm data-config entries from a HuggingFace model's image processor settings."""
    from .models import model_source

    directory = (model_source(model) or {}).get("huggingface_directory")
    config = getattr(model, "config", None)
    settings = {}
    if directory and (Path(directory) / "preprocessor_config.json").is_file():
        settings = json.loads((Path(directory) / "preprocessor_config.json").read_text())
    args = {key: tuple(settings[f"image_{key}"]) for key in ("mean", "std")
            if f"image_{key}" in settings}
    size = settings.get("size")
    if isinstance(size, dict):
        size = size.get("height") or size.get("shortest_edge")
    size = size or getattr(config, "image_size", None)
    if isinstance(size, int):
        channels = getattr(config, "num_channels", 3)
        args["input_size"] = (channels, size, size)
        args["crop_pct"] = 1.0  # the processor resizes to the size; it does not crop
    return args


def folder_loaders(layout: FolderLayout, transform, batch_size: int, val_fraction: float,
                   seed: int) -> tuple[DataLoader, DataLoader]:
    """Train (shuffled, seeded) and validation loaders of a checked folder."""
    from sklearn.model_selection import train_test_split
    from torchvision.datasets import ImageFolder

    train = ImageFolder(str(layout.train_dir), transform=transform)
    _check_images(path for path, _ in train.samples)
    if layout.val_dir is not None:
        val = ImageFolder(str(layout.val_dir), transform=transform)
        _check_images(path for path, _ in val.samples)
    else:
        if not 0 < val_fraction < 1:
            raise InvalidInputError(f"--val-fraction must lie in (0, 1), got {val_fraction}")
        indices = list(range(len(train)))
        try:
            kept, held = train_test_split(indices, test_size=val_fraction, random_state=seed,
                                          stratify=train.targets)
        except ValueError as err:  # a class too small to appear on both sides
            raise InvalidInputError(f"--data {layout.root}: cannot split it with --val-fraction "
                                    f"{val_fraction}: {err}") from None
        train, val = Subset(train, kept), Subset(train, held)
        train.classes = val.classes = layout.classes
    generator = torch.Generator().manual_seed(seed)
    return (DataLoader(train, batch_size=batch_size, shuffle=True, generator=generator),
            DataLoader(val, batch_size=batch_size))


def _check_images(paths: Iterable[str]) -> None:
    """Open every image's header (not its pixels: about 0.1 ms each), so that a file that is
    not a readable image is named now, not as a trial's failure halfway through training."""
    from PIL import Image, UnidentifiedImageError

    unreadable = []
    for path in paths:
        try:
            with Image.open(path) as image:
                image.size
        except (UnidentifiedImageError, OSError, ValueError) as err:
            unreadable.append(f"{path} ({type(err).__name__})")
    if unreadable:
        raise InvalidInputError(f"{len(unreadable)} file(s) in the data folder are not readable "
                                f"images: {'; '.join(unreadable[:5])}"
                                + (" ..." if len(unreadable) > 5 else "")
                                + "; remove or replace them")


def function_loaders(spec: str) -> tuple[Iterable, Iterable]:
    """Call `module:function` (the current directory first on the path) and check it gave
    two iterables of batches."""
    module_name, _, function_name = spec.partition(":")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise InvalidInputError(f"--data {spec}: cannot import module {module_name!r}: "
                                f"{err}") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise InvalidInputError(f"--data {spec}: module {module_name!r} has no function "
                                f"{function_name!r}")
    loaders = function()
    if not (isinstance(loaders, (tuple, list)) and len(loaders) == 2
            and all(_iterable(loader) for loader in loaders)):
        raise InvalidInputError(f"--data {spec}: {function_name}() must return "
                                f"(train_loader, val_loader), got {_shape_of(loaders)}")
    return loaders[0], loaders[1]


def class_count(train: Any) -> int:
    """Classes of a loader from `module:function`: its dataset's `classes`, else the largest
    target in one pass + 1."""
    classes = getattr(getattr(train, "dataset", None), "classes", None)
    if classes:
        return len(classes)
    largest = -1
    for _, targets in train:
        largest = max(largest, int(torch.as_tensor(targets).max()))
    if largest < 1:
        raise InvalidInputError("--data: the training loader's targets are not class indices "
                                "0..C-1 with at least two classes")
    return largest + 1


def _iterable(value: Any) -> bool:
    try:
        iter(value)
    except TypeError:
        return False
    return not isinstance(value, (str, bytes, torch.Tensor))


def _shape_of(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}: " + ", ".join(
            type(v).__name__ for v in value[:4])
    return f"a {type(value).__name__}"
