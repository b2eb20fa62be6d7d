"""ONNX in one place: the graph a model exports to, and an ONNX Runtime session for it.

The ONNX Runtime target times exactly the graph `export(format="onnx")` writes: both call
`onnx_bytes`. Needs the optional extra: `pip install 'autoprune[export]'`.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import torch
import torch.nn as nn

from ..errors import InvalidInputError


def onnxruntime_module():
    try:
        import onnxruntime
    except ImportError:
        raise InvalidInputError("ONNX Runtime is not installed: pip install "
                                "'autoprune[export]'") from None
    return onnxruntime


def check_single_tensor(inputs: Any) -> None:
    if not isinstance(inputs, torch.Tensor):
        raise InvalidInputError(f"ONNX export and the ONNX Runtime target take models with one "
                                f"tensor input for now; the example inputs are a "
                                f"{type(inputs).__name__}")


def onnx_bytes(model: nn.Module, inputs: torch.Tensor) -> bytes:
    """`model` exported to ONNX (TorchScript-based exporter, opset default), input named
    'input' and the first output 'output', the batch dimension dynamic."""
    check_single_tensor(inputs)
    buffer = io.BytesIO()
    # torch deprecates this exporter for the torch.export-based one, which needs onnxscript
    # and does not yet export every model this one does; the warning repeats per export.
    # Gradients stay on: under no_grad, nn.MultiheadAttention takes a fused fast path
    # (`_native_multi_head_attention`) that has no ONNX export.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model.eval(), (inputs,), buffer, dynamo=False, input_names=["input"],
                          output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    return buffer.getvalue()


def cpu_session(graph: bytes | str, threads: int):
    """An ONNX Runtime CPU session with `threads` intra-op threads and no spinning.

    Idle pool threads spin by default, waiting for the next call: in interleaved timing they
    would spin through the other model's block and slow it. Without spinning every model is
    timed alike (a production server that runs one model may see it slightly faster).
    """
    onnxruntime = onnxruntime_module()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
