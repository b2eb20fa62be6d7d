"""Checkpoints of pruned models: safetensors weights plus a JSON architecture description.

Nothing is pickled. The JSON holds the pruning history (layer names and the channel indices
removed), so loading deep-copies the user's base model, replays the history to get the
pruned shapes, and loads the weights with safetensors. Files are written to a temporary
name and renamed, and the JSON, written last, records the weights' SHA-256.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_model

from ..errors import CheckpointError
from ..pruning.prune import replay_history

FORMAT = "autoprune.pruned-model"
VERSION = 1
WEIGHTS_FILE = "model.safetensors"
ARCHITECTURE_FILE = "architecture.json"
INT8_GRAPH_FILE = "model.int8.onnx"  # an int8 trial's quantized graph, as it was timed


def input_spec(inputs: Any) -> Any:
    """Shapes and dtypes of example inputs (batch of one), enough to rebuild the graph."""
    if isinstance(inputs, torch.Tensor):
        return {"shape": [1, *inputs.shape[1:]], "dtype": str(inputs.dtype).removeprefix("torch.")}
    if isinstance(inputs, dict):
        return {"dict": {key: input_spec(value) for key, value in inputs.items()}}
    if isinstance(inputs, (list, tuple)):
        return {"sequence": [input_spec(value) for value in inputs]}
    raise TypeError(f"cannot describe example inputs of type {type(inputs).__name__}")


def inputs_from_spec(spec: Any) -> Any:
    """Zero-filled example inputs matching `input_spec`'s description."""
    if "shape" in spec:
        return torch.zeros(spec["shape"], dtype=getattr(torch, spec["dtype"]))
    if "dict" in spec:
        return {key: inputs_from_spec(value) for key, value in spec["dict"].items()}
    return [inputs_from_spec(value) for value in spec["sequence"]]


def model_class_name(model: nn.Module) -> str:
    return f"{type(model).__module__}.{type(model).__qualname__}"


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, as hex: what checkpoints and the study record."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename: never half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def with_module_versions(state: dict, model: nn.Module) -> dict:
    """`state` carrying `model`'s per-module versions (`_metadata`), as `state_dict()` returns
    it. A state dict read back from safetensors, or saved as a plain dict, has lost them, and
    some modules refuse to load without (torchvision's MNASNet checks its version)."""
    if getattr(state, "_metadata", None) is not None:
        return state
    versioned = OrderedDict(state)
    versioned._metadata = getattr(model.state_dict(), "_metadata", None)
    return versioned


def load_weights_file(model: nn.Module, path: str | Path) -> None:
    """Load a safetensors file into `model`, every name matched (strict), module versions kept.

    Tied parameters are written once (`save_model` drops the duplicates), so a name the file
    lacks is accepted when it shares its storage with one the file has.
    """
    state = load_file(str(path), device=str(next(model.parameters(), torch.empty(0)).device))
    own = model.state_dict()
    missing, unexpected = model.load_state_dict(with_module_versions(state, model), strict=False)
    loaded = {own[name].data_ptr() for name in state if name in own}
    missing = [name for name in missing if own[name].data_ptr() not in loaded]
    if missing or unexpected:
        raise RuntimeError(f"names missing from the file: {missing[:8]}; names the model does "
                           f"not have: {list(unexpected)[:8]}")


def save_checkpoint(directory: str | Path, model: nn.Module, base_model: nn.Module,
                    history: list, example_inputs: Any, extra: dict | None = None) -> Path:
    """Write `model`'s weights and architecture description into `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / WEIGHTS_FILE
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{WEIGHTS_FILE}.")
    os.close(fd)
    save_model(model.cpu(), tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, weights)
    description = {
        "format": FORMAT,
        "version": VERSION,
        "base_model_class": model_class_name(base_model),
        "example_inputs": input_spec(example_inputs),
        "pruning_history": history,
        "weights_file": WEIGHTS_FILE,
        "weights_sha256": file_sha256(weights),
        **(extra or {}),
    }
    atomic_write_text(directory / ARCHITECTURE_FILE, json.dumps(description, indent=1))
    return directory


def read_description(directory: str | Path) -> dict:
    """The parsed architecture JSON of a checkpoint, validated."""
    path = Path(directory) / ARCHITECTURE_FILE
    if not Path(directory).exists():
        raise CheckpointError(f"{directory} does not exist: give an autoprune checkpoint "
                              "directory (one holding architecture.json and model.safetensors)")
    try:
        description = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no architecture description; is this an autoprune "
                              "checkpoint directory?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err}); the file is damaged") from None
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an autoprune pruned-model description")
    if description.get("version") != VERSION:
        raise CheckpointError(f"{path}: format version {description.get('version')} is not "
                              f"supported by this autoprune (it reads version {VERSION})")
    return description


def load_checkpoint(directory: str | Path, base_model: nn.Module) -> nn.Module:
    """The pruned model saved in `directory`, rebuilt from `base_model` (left unchanged)."""
    directory = Path(directory)
    description = read_description(directory)
    weights = directory / description.get("weights_file", WEIGHTS_FILE)
    if not weights.is_file():
        raise CheckpointError(f"{weights}: weights file is missing")
    if file_sha256(weights) != description.get("weights_sha256"):
        raise CheckpointError(f"{weights}: contents do not match the SHA-256 recorded in "
                              f"{ARCHITECTURE_FILE}; the file is truncated or was changed")
    if description["base_model_class"] != model_class_name(base_model):
        raise CheckpointError(
            f"{directory}: checkpoint was pruned from a {description['base_model_class']}, "
            f"but the base model given is a {model_class_name(base_model)}")
    model = copy.deepcopy(base_model).cpu().eval()
    try:
        replay_history(model, inputs_from_spec(description["example_inputs"]),
                       description["pruning_history"])
    except Exception as err:  # any failure here means the history does not fit this model
        raise CheckpointError(f"{directory}: the pruning history does not fit the base model "
                              f"given ({type(err).__name__}: {err})") from err
    try:
        load_weights_file(model, weights)
    except (SafetensorError, RuntimeError) as err:
        raise CheckpointError(f"{weights}: cannot load into the rebuilt architecture: {err}") from err
    return model.eval()
