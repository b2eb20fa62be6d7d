"""PyTorch eager on the CPU: the module is called as is, at a fixed thread count.

The CPU keeps no allocator counter, so the activation peak is tracked with a
`TorchDispatchMode`: every tensor an operator returns is counted until it is freed, and the
peak of the live total is the figure. It counts what PyTorch allocates for outputs, not
scratch space inside a kernel (oneDNN workspaces), so it is a slight underestimate.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode

from ..runtime.language_model import generation_runner, is_causal_lm
from ..runtime.model_io import run_model
from .base import Runnable, Target, register_target


class LiveTensorBytes(TorchDispatchMode):
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


@register_target
class TorchCPU(Target):
    name = "cpu"
    description = "PyTorch eager on the CPU"
    device_type = "cpu"

    def runnable(self, model: nn.Module, inputs: Any) -> Runnable:
        model.eval()
        if is_causal_lm(model):  # tokens generated with the KV cache (SearchOptions.lm_latency)
            return generation_runner(model, inputs, self.decode_tokens, self.lm_latency)
        return lambda: run_model(model, inputs)

    def activation_peak_bytes(self, model: nn.Module, inputs: Any) -> int:
        tracker = LiveTensorBytes()
        with torch.inference_mode(), tracker:
            output = run_model(model, inputs)
        del output
        return tracker.peak
