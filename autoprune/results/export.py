"""Export a pruned model to the format it is deployed in, and check the export.

Every export is reloaded and run on the same inputs as the PyTorch model; a mismatch is an
`ExportError`, never a silently wrong file.

* `safetensors`: a directory with the weights and the JSON architecture description, which
  `autoprune.load(path, base_model)` turns back into the model with no unpickling.
* `onnx`: one `.onnx` file with a dynamic batch dimension (TorchScript-based exporter),
  checked with onnxruntime (`pip install autoprune[export]`); for an int8 trial, the
  quantized graph it was timed and scored as (checked to run, not to match fp32 outputs).
* `torchscript`: `torch.jit.script`, or `torch.jit.trace` where scripting fails.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import ExportError, InvalidInputError
from ..runtime.model_io import logits_of, run_model
from ..runtime.onnx_io import cpu_session, onnx_bytes, onnxruntime_module
from ..store.checkpoint import (ARCHITECTURE_FILE, INT8_GRAPH_FILE, inputs_from_spec,
                                load_checkpoint, read_description)

FORMATS = ("safetensors", "onnx", "torchscript")
TOLERANCE = {"safetensors": 0.0, "torchscript": 1e-5, "onnx": 1e-4}


def verification_inputs(spec: Any, batch: int = 2, seed: int = 0) -> Any:
    """Inputs shaped like the example inputs: random floats (integers stay zero)."""
    inputs = inputs_from_spec(spec)
    generator = torch.Generator().manual_seed(seed)

    def fill(value):
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v) for v in value]
        shape = (batch, *value.shape[1:])
        if value.is_floating_point():
            return torch.randn(shape, generator=generator, dtype=value.dtype)
        return torch.zeros(shape, dtype=value.dtype)

    return fill(inputs)


def _check(name: str, expected: torch.Tensor, actual: torch.Tensor, path: Path) -> float:
    actual = torch.as_tensor(actual)
    if actual.shape != expected.shape:
        raise ExportError(f"{path}: {name} export gives outputs of shape {tuple(actual.shape)}, "
                          f"PyTorch {tuple(expected.shape)}")
    error = (actual.float() - expected.float()).abs().max().item()
    scale = max(1.0, expected.abs().max().item())
    if error > TOLERANCE[name] * scale:
        raise ExportError(f"{path}: {name} export differs from PyTorch by {error:.3g} "
                          f"(tolerance {TOLERANCE[name] * scale:.3g})")
    return error


def _export_onnx(model: nn.Module, inputs: torch.Tensor, path: Path) -> torch.Tensor:
    """Write the graph the ONNX Runtime target times (runtime/onnx_io.py); its first output."""
    try:
        onnxruntime_module()
        graph = onnx_bytes(model, inputs)
    except InvalidInputError as err:
        raise ExportError(f"ONNX export: {err}") from None
    path.write_bytes(graph)
    session = cpu_session(str(path), threads=torch.get_num_threads())
    return torch.from_numpy(session.run(None, {"input": inputs.numpy()})[0])


def _export_int8(graph: Path, expected: torch.Tensor, inputs: torch.Tensor, path: Path) -> Path:
    """An int8 trial's quantized graph, as it was timed and scored. It cannot match the fp32
    outputs to a float tolerance: it must run, give the same shape, and finite values."""
    shutil.copyfile(graph, path)
    actual = torch.from_numpy(cpu_session(str(path), threads=torch.get_num_threads()).run(
        None, {"input": inputs.numpy()})[0])
    if actual.shape != expected.shape or not torch.isfinite(actual).all():
        raise ExportError(f"{path}: the int8 graph gives outputs of shape "
                          f"{tuple(actual.shape)} (PyTorch {tuple(expected.shape)}) or "
                          "non-finite values")
    return path


def _export_torchscript(model: nn.Module, inputs: Any, path: Path) -> torch.Tensor:
    try:
        compiled = torch.jit.script(model)
    except Exception:  # scripting fails on much dynamic Python; tracing is the fallback
        example = tuple(inputs.values()) if isinstance(inputs, dict) else (inputs,)
        compiled = torch.jit.trace(model, example, strict=False)
    compiled.save(str(path))
    reloaded = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return logits_of(run_model(reloaded, inputs))


def export_checkpoint(checkpoint_dir: str | Path, base_model: nn.Module, path: str | Path,
                      format: str = "safetensors") -> Path:
    """Write the checkpoint's model to `path` in `format`, verified against PyTorch."""
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    checkpoint_dir, path = Path(checkpoint_dir), Path(path)
    model = load_checkpoint(checkpoint_dir, base_model).eval()
    inputs = verification_inputs(read_description(checkpoint_dir)["example_inputs"])
    with torch.no_grad():
        expected = logits_of(run_model(model, inputs))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if format == "safetensors":
            if path.exists():
                shutil.rmtree(path)
            shutil.copytree(checkpoint_dir, path)
            with torch.no_grad():
                actual = logits_of(run_model(load_checkpoint(path, base_model), inputs))
        elif format == "onnx" and (checkpoint_dir / INT8_GRAPH_FILE).is_file():
            return _export_int8(checkpoint_dir / INT8_GRAPH_FILE, expected, inputs, path)
        elif format == "onnx":
            actual = _export_onnx(model, inputs, path)
        else:
            actual = _export_torchscript(model, inputs, path)
    except ExportError:
        raise
    except Exception as err:
        raise ExportError(f"{format} export of {checkpoint_dir} to {path} failed: "
                          f"{type(err).__name__}: {err}") from err
    _check(format, expected, actual, path)
    return path


def load(path: str | Path, base_model: nn.Module) -> nn.Module:
    """A pruned model exported as safetensors (or a trial checkpoint), rebuilt on `base_model`."""
    path = Path(path)
    if path.is_file() and path.name == ARCHITECTURE_FILE:
        path = path.parent
    return load_checkpoint(path, base_model)
