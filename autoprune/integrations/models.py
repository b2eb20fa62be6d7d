"""Getting a model to search: timm and torchvision names, local checkpoint files, HuggingFace
directories, and the digits baseline.

A model name is a timm name (`resnet18`) or a torchvision one with the `tv:` prefix
(`tv:resnet50`). Nothing is downloaded: models are built without weights unless the user
asks for pretrained weights they have cached. Weights load with safetensors or
`torch.load(weights_only=True)`; a sidecar JSON next to a `.safetensors` file names the
architecture it holds. A model records where it came from (`model_source`) so a worker, or a
result opened from storage, can rebuild the architecture.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_model

from ..errors import InvalidInputError
from ..store.checkpoint import load_weights_file, with_module_versions
from .bundled_data import bundled_loaders
from .digits import DIGITS_CLASSES

logger = logging.getLogger(__name__)

DEFAULT_DEMO_MODEL = "resnet18"
DEFAULT_CACHE_DIR = Path("reports") / "models"
TORCHVISION_PREFIX = "tv:"
SOURCE_ATTRIBUTE = "autoprune_source"  # set on models built here: how to rebuild them


def create_timm_model(name: str, num_classes: int, pretrained: bool = False,
                      **kwargs) -> nn.Module:
    """`timm.create_model` with a clear error for an unknown name; `kwargs` go to the model
    (e.g. `channels` of a narrowed ResNet)."""
    import timm

    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:8]
        raise InvalidInputError(f"unknown timm model {name!r}" +
                                (f"; similar names: {', '.join(close)}" if close else ""))
    return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, **kwargs)


def create_torchvision_model(name: str, num_classes: int, pretrained: bool = False) -> nn.Module:
    """torchvision's `name` (without the `tv:` prefix) with `num_classes` outputs; pretrained
    weights only from torch's local cache, and only with ImageNet's 1000 classes."""
    import torchvision

    if name not in torchvision.models.list_models():
        close = [n for n in torchvision.models.list_models() if name.split("_")[0] in n][:8]
        raise InvalidInputError(f"unknown torchvision model {name!r}" +
                                (f"; similar names: {', '.join(close)}" if close else ""))
    if pretrained:
        if num_classes != 1000:
            raise InvalidInputError(
                f"--pretrained {TORCHVISION_PREFIX}{name} has ImageNet's 1000 classes but the "
                f"data has {num_classes}: replace and train its head yourself, save the state "
                "dict, and pass it with --weights")
        try:
            model = torchvision.models.get_model(name, weights="DEFAULT")
        except Exception as err:  # no network here: only weights already in torch's cache
            raise InvalidInputError(f"cannot get torchvision's pretrained weights for {name} "
                                    f"(they must be in torch's local cache): {err}") from err
    else:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    setattr(model, SOURCE_ATTRIBUTE, {"torchvision_model": name, "num_classes": num_classes})
    return model


def create_model(name: str, num_classes: int, pretrained: bool = False) -> nn.Module:
    """A timm model, or a torchvision one for a `tv:` name."""
    if name.startswith(TORCHVISION_PREFIX):
        return create_torchvision_model(name.removeprefix(TORCHVISION_PREFIX), num_classes,
                                        pretrained)
    return create_timm_model(name, num_classes, pretrained)


def is_huggingface_directory(path: str | Path) -> bool:
    """A directory written by `save_pretrained` (it holds a config.json)."""
    return Path(path).is_dir() and (Path(path) / "config.json").is_file()


def load_huggingface_directory(path: str | Path) -> nn.Module:
    """A transformers model from a local directory (plain, or pruned and saved by
    `autoprune.huggingface.save_pretrained`)."""
    from .huggingface import from_pretrained

    path = Path(path).resolve()
    try:
        model = from_pretrained(path)
    except ImportError:
        raise InvalidInputError(f"{path} is a HuggingFace model directory: "
                                "pip install 'autoprune[hf]'") from None
    except Exception as err:
        raise InvalidInputError(f"cannot load the HuggingFace model in {path}: {err}") from err
    setattr(model, SOURCE_ATTRIBUTE, {"huggingface_directory": str(path)})
    return model


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a state dict from `.safetensors` or a `.pt/.pth` file, never unpickling code."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            load_weights_file(model, path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(state, dict) and "state_dict" in state:
                state = state["state_dict"]
            model.load_state_dict(with_module_versions(state, model), strict=True)
    except Exception as err:
        raise InvalidInputError(f"cannot load weights from {path} into "
                                f"{type(model).__name__}: {err}") from err
    return model


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def _name_entry(name: str) -> dict:
    if name.startswith(TORCHVISION_PREFIX):
        return {"torchvision_model": name.removeprefix(TORCHVISION_PREFIX)}
    return {"timm_model": name}


def save_named_checkpoint(model: nn.Module, name: str, num_classes: int, path: Path,
                          extra: dict | None = None) -> Path:
    """Write `path` (safetensors) and its sidecar JSON naming the architecture (a timm or
    `tv:` name); an `extra` entry `timm_kwargs` is passed to `timm.create_model` when loading."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, str(path))
    _sidecar(path).write_text(json.dumps({**_name_entry(name), "num_classes": num_classes,
                                          **(extra or {})}, indent=1))
    return path


def load_named_checkpoint(path: str | Path) -> nn.Module:
    """A timm or torchvision model rebuilt from a `.safetensors` file and its sidecar JSON."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"checkpoint file {path} does not exist")
    sidecar = _sidecar(path)
    if not sidecar.is_file():
        raise InvalidInputError(f"{path} has no sidecar {sidecar.name} naming its architecture; "
                                "pass the model name with --model and this file with --weights")
    info = _read_sidecar(sidecar)
    try:
        if "torchvision_model" in info:
            model = create_torchvision_model(info["torchvision_model"], info["num_classes"])
        else:
            model = create_timm_model(info["timm_model"], info["num_classes"],
                                      **info.get("timm_kwargs", {}))
    except TypeError as err:  # timm's reply to an argument the architecture does not take
        raise InvalidInputError(f"{sidecar}: timm cannot build {info['timm_model']!r} with "
                                f"timm_kwargs {info.get('timm_kwargs')} ({err})") from None
    return load_weights(model, path)


def _read_sidecar(sidecar: Path) -> dict:
    """The sidecar's architecture entry, checked: a name, a class count, keyword arguments."""
    try:
        info = json.loads(sidecar.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise InvalidInputError(f"{sidecar} is not valid JSON ({err})") from None
    if not isinstance(info, dict) or not ({"timm_model", "torchvision_model"} & set(info)):
        raise InvalidInputError(f"{sidecar} names no architecture: it needs \"timm_model\" or "
                                "\"torchvision_model\" (and \"num_classes\"), as "
                                "save_named_checkpoint writes")
    name = info.get("timm_model", info.get("torchvision_model"))
    if not isinstance(name, str):
        raise InvalidInputError(f"{sidecar}: the model name must be a string, got {name!r}")
    classes = info.get("num_classes")
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
        raise InvalidInputError(f"{sidecar}: \"num_classes\" must be a positive integer, "
                                f"got {classes!r}")
    if not isinstance(info.get("timm_kwargs", {}), dict):
        raise InvalidInputError(f"{sidecar}: \"timm_kwargs\" must be an object of keyword "
                                f"arguments, got {info['timm_kwargs']!r}")
    return info


def fit(model: nn.Module, train: Iterable, val: Iterable, epochs: int) -> float:
    """Train `model` from its current weights (AdamW, one-cycle) on `train`; returns its
    accuracy on `val`."""
    from ..runtime.evaluate import evaluate
    from ..study.finetune_plan import epoch_steps

    # AdamW with one-cycle: 99 % for resnet18 in 4 epochs on digits, and it also trains
    # MobileNetV3, which SGD left near chance in 6 epochs on that task.
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3,
                                                   total_steps=epochs * epoch_steps(train))
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        for inputs, targets in train:
            loss = F.cross_entropy(model(inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        logger.info(f"  epoch {epoch + 1}/{epochs}: loss {loss.item():.3f} "
                    f"({time.perf_counter() - start:.0f} s)")
    return evaluate(model.eval(), val, "cpu")


def train_model(name: str = DEFAULT_DEMO_MODEL, epochs: int = 4, seed: int = 0,
                data: str = "digits") -> tuple[nn.Module, float]:
    """Train `name` (timm, or `tv:` torchvision) from scratch on a bundled task
    (`bundled_data`); returns it and its held-out accuracy."""
    torch.manual_seed(seed)
    train, val = bundled_loaders(data, batch_size=64, seed=seed)
    model = create_model(name, DIGITS_CLASSES)
    accuracy = fit(model, train, val, epochs)
    return model.eval(), accuracy


def trained_model(name: str = DEFAULT_DEMO_MODEL, cache_dir: str | Path = DEFAULT_CACHE_DIR,
                  epochs: int = 4, data: str = "digits", loaders: tuple | None = None,
                  num_classes: int = DIGITS_CLASSES) -> nn.Module:
    """Model `name` (timm, or `tv:` torchvision) trained on the bundled task `data`, or on
    `loaders` (the user's data, whose cache key `data` is then), from the cache or trained now
    and cached."""
    path = Path(cache_dir) / f"{name.replace(':', '-')}-{data}-{epochs}ep.safetensors"
    if path.is_file():
        logger.info(f"using the cached {data} model {path}")
        return load_named_checkpoint(path).eval()
    logger.info(f"training {name} on {data} for {epochs} epochs (cached as {path}) ...")
    if loaders is None:
        model, accuracy = train_model(name, epochs, data=data)
    else:
        torch.manual_seed(0)
        model = create_model(name, num_classes)
        accuracy = fit(model, *loaders, epochs)
    logger.info(f"  validation accuracy {accuracy:.2%}")
    save_named_checkpoint(model, name, num_classes, path, {"data": data, "accuracy": accuracy,
                                                          "epochs": epochs})
    return model.eval()


def model_source(model: nn.Module) -> dict | None:
    """How to rebuild `model`'s architecture later (a timm or torchvision name and class
    count, or a HuggingFace directory), if known."""
    if isinstance(getattr(model, SOURCE_ATTRIBUTE, None), dict):
        return dict(getattr(model, SOURCE_ATTRIBUTE))
    cfg = getattr(model, "pretrained_cfg", None) or {}
    name = cfg.get("architecture") if isinstance(cfg, dict) else None
    if not name:
        return None
    import timm

    if not timm.is_model(name):
        return None
    return {"timm_model": name, "num_classes": int(getattr(model, "num_classes", 0)),
            "in_chans": int(getattr(model, "in_chans", 3) or 3)}


def rebuild_base_model(source: dict | None) -> nn.Module | None:
    """The architecture recorded by `model_source` (its weights are replaced by checkpoints'
    weights; a HuggingFace directory's are its own)."""
    if not source:
        return None
    if "torchvision_model" in source:
        return create_torchvision_model(source["torchvision_model"], source["num_classes"])
    if "huggingface_directory" in source:
        return load_huggingface_directory(source["huggingface_directory"])
    if "timm_model" not in source:
        return None
    import timm

    return timm.create_model(source["timm_model"], pretrained=False,
                             num_classes=source["num_classes"], in_chans=source.get("in_chans", 3))
