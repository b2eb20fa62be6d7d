"""Hardware measurements of a model on the target device: latency, memory, MACs, parameters.

Latency uses `torch.utils.benchmark.Timer` (fixed thread count, warm-up, CUDA
synchronisation) and reports the median of repeated runs, which keeps the spread of a noisy
shared machine out of the figure. Memory is the bytes of parameters and buffers plus the
peak memory of activations during one inference:

* on CUDA, the caching allocator's peak (`torch.cuda.max_memory_allocated`) above what was
  allocated before the forward pass;
* on CPU, which keeps no such counter, every tensor an operator returns is tracked through a
  `TorchDispatchMode` until it is freed; the peak of the live total is the figure. It counts
  what PyTorch allocates for outputs, not scratch space inside a kernel (oneDNN workspaces),
  so it is a slight underestimate.
"""

from __future__ import annotations

import statistics
import weakref
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
import torch.nn as nn
import torch_pruning as tp
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.benchmark import Timer

from ..pruning.conversions import conv1d_counted_as_linear
from .model_io import run_model, to_device

MB = 1024 * 1024


@dataclass(frozen=True)
class Measurement:
    """What one model costs on the target device, at the example batch size."""

    latency_ms: float
    latency_spread_ms: float  # interquartile range of the timed blocks
    memory_mb: float
    weights_mb: float
    activations_mb: float
    params: int
    macs: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def count_macs_and_params(model: nn.Module, example_inputs: Any) -> tuple[int, int]:
    """MACs of one forward pass at the example batch size, and the parameter count."""
    with conv1d_counted_as_linear():
        macs, params = tp.utils.count_ops_and_params(model, example_inputs)
    return int(macs), int(params)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def latency_ms(model: nn.Module, inputs: Any, threads: int, min_run_time: float = 0.3,
               warmup: int = 3) -> tuple[float, float]:
    """Median latency of one forward pass in milliseconds, and the interquartile range."""
    timer = Timer(stmt="run_model(model, inputs)",
                  globals={"run_model": run_model, "model": model, "inputs": inputs},
                  num_threads=threads)
    with torch.inference_mode():
        for _ in range(warmup):
            run_model(model, inputs)
        measured = timer.blocked_autorange(min_run_time=min_run_time)
    return measured.median * 1e3, measured.iqr * 1e3


class _LiveTensorBytes(TorchDispatchMode):
    """Tracks the bytes of storages created inside the mode, until each is freed."""

    def __init__(self):
        super().__init__()
        self.live: dict[int, list] = {}  # storage pointer -> [bytes, tensors referring to it]
        self.current = 0
        self.peak = 0

    def _release(self, key: int) -> None:
        entry = self.live.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self.live[key]

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key == 0:
            return
        if key in self.live:
            self.live[key][1] += 1
        else:
            self.live[key] = [storage.nbytes(), 1]
            self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)
        weakref.finalize(tensor, self._release, key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(value, torch.Tensor):
                self._track(value)
        return out


def activation_peak_bytes(model: nn.Module, inputs: Any, device: torch.device) -> int:
    """Peak bytes of activations alive at once during one inference (see module docstring)."""
    with torch.inference_mode():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            before = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            run_model(model, inputs)
            torch.cuda.synchronize(device)
            return max(0, torch.cuda.max_memory_allocated(device) - before)
        tracker = _LiveTensorBytes()
        with tracker:
            output = run_model(model, inputs)
        del output
        return tracker.peak


def weight_bytes(model: nn.Module) -> int:
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def measure(model: nn.Module, example_inputs: Any, device: str | torch.device, threads: int,
            min_run_time: float = 0.3) -> Measurement:
    """Latency, memory, MACs and parameters of `model` on `device` with `example_inputs`."""
    device = torch.device(device)
    model = model.to(device).eval()
    inputs = to_device(example_inputs, device)
    macs, params = count_macs_and_params(model, inputs)
    median, spread = latency_ms(model, inputs, threads, min_run_time)
    weights = weight_bytes(model)
    activations = activation_peak_bytes(model, inputs, device)
    return Measurement(latency_ms=median, latency_spread_ms=spread,
                       memory_mb=(weights + activations) / MB, weights_mb=weights / MB,
                       activations_mb=activations / MB, params=params, macs=macs)


def interleaved_latency_ms(models: dict[Any, nn.Module], example_inputs: Any,
                           device: str | torch.device, threads: int, rounds: int = 5,
                           min_run_time: float = 0.2,
                           on_round: Callable[[], None] | None = None) -> dict[Any, float]:
    """Median latency of each model over `rounds` rounds, timed in turn within each round.

    Interleaving spreads a shared machine's drift over every model alike, so the ratio of
    two results is not a lucky outlier of one of them.
    """
    device = torch.device(device)
    inputs = to_device(example_inputs, device)
    samples: dict[Any, list[float]] = {key: [] for key in models}
    for _ in range(rounds):
        for key, model in models.items():
            model.to(device).eval()
            samples[key].append(latency_ms(model, inputs, threads, min_run_time, warmup=1)[0])
        if on_round is not None:
            on_round()
    return {key: statistics.median(values) for key, values in samples.items()}
