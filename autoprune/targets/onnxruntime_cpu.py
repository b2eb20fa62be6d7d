"""ONNX Runtime on the CPU: each model is exported to ONNX in memory and run in its own
`InferenceSession` at the target's thread count.

What is timed is what a user deploys: the graph `SearchResult.export(..., format="onnx")`
writes (the same export call), after ONNX Runtime's graph optimisations (operator fusion,
constant folding). The activation peak is PyTorch eager's estimate of the same model: ONNX
Runtime reports no per-inference peak (its arena grows and keeps memory).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ..errors import InvalidInputError
from ..runtime.language_model import is_causal_lm
from ..runtime.onnx_io import check_single_tensor, cpu_session, onnx_bytes, onnxruntime_module
from ..runtime.quantize import OnnxModule
from .base import Runnable, Target, register_target
from .torch_cpu import TorchCPU


@register_target
class OnnxRuntimeCPU(Target):
    name = "onnxruntime"
    description = "ONNX Runtime on the CPU"
    device_type = "cpu"
    precisions = ("fp32", "int8")  # int8: static quantization, runtime/quantize.py

    @classmethod
    def create(cls, device: torch.device, threads: int) -> "OnnxRuntimeCPU":
        onnxruntime_module()  # a clear error now, before any model is prepared
        return super().create(device, threads)

    def check(self, model: nn.Module, inputs: Any) -> None:
        if is_causal_lm(model):
            raise InvalidInputError("a causal LM is timed generating with its KV cache, which "
                                    "the onnxruntime target does not do yet: use target='cpu'")
        check_single_tensor(inputs)

    def runnable(self, model: nn.Module, inputs: Any) -> Runnable:
        """An `OnnxModule` (an int8 graph, say) is timed as it is; any other module is
        exported first."""
        graph = model.graph if isinstance(model, OnnxModule) else onnx_bytes(model, inputs)
        session = cpu_session(graph, self.threads)
        feeds = {"input": inputs.detach().cpu().numpy()}
        return lambda: session.run(None, feeds)

    def activation_peak_bytes(self, model: nn.Module, inputs: Any) -> int:
        return TorchCPU(self.device, self.threads).activation_peak_bytes(model, inputs)
