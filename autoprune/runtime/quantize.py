"""int8 for ONNX Runtime: static post-training quantization of a model's ONNX graph, and the
quantized graph as a module a task can score.

`quantize_int8` exports the (pruned, fine-tuned) model with `onnx_io.onnx_bytes`, calibrates
activation ranges on a few training batches (min-max) and writes a QDQ graph with per-channel
int8 weights and uint8 activations, the format ONNX Runtime's x86 CPU kernels (VNNI, AMX) run
in integer arithmetic. `OnnxModule` runs such a graph in a session behind `nn.Module`'s call, so
the int8 model's accuracy is measured by running it, with the same metric as any model.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn as nn

from .model_io import first_batch
from .onnx_io import check_single_tensor, cpu_session, onnx_bytes, onnxruntime_module


class _Batches:
    """ONNX Runtime's calibration reader over the inputs of a few batches."""

    def __init__(self, batches: list[np.ndarray]):
        self._batches = iter(batches)

    def get_next(self):
        batch = next(self._batches, None)
        return None if batch is None else {"input": batch}

    def rewind(self):  # not needed for one min-max pass
        pass


def calibration_inputs(train: Iterable, batches: int) -> list[np.ndarray]:
    """The inputs of the first `batches` batches of `train`, as float32 arrays."""
    first_batch(train, "train")
    arrays = []
    for inputs, _ in itertools.islice(train, batches):
        check_single_tensor(inputs)
        arrays.append(inputs.detach().cpu().float().numpy())
    return arrays


@contextlib.contextmanager
def _quiet_root_logger():
    """ONNX Runtime's quantizer advises pre-processing on every call with `logging.warning`,
    which also configures the root logger when it has no handler: from then on every
    `autoprune` message was printed twice. A handler that drops everything is the root's for
    the call, and warnings are off."""
    root, guard = logging.getLogger(), logging.NullHandler()
    previous = logging.root.manager.disable
    root.addHandler(guard)
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)
        root.removeHandler(guard)


def quantize_int8(model: nn.Module, example_inputs: torch.Tensor,
                  calibration: list[np.ndarray]) -> bytes:
    """The int8 QDQ graph of `model` (per-channel weights, min-max calibrated activations)."""
    onnxruntime_module()
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    with tempfile.TemporaryDirectory() as work:
        fp32, int8 = Path(work) / "fp32.onnx", Path(work) / "int8.onnx"
        fp32.write_bytes(onnx_bytes(model, example_inputs))
        # Unsigned activations, signed weights (u8s8): ONNX Runtime's fast x86 integer kernels.
        # Signed activations (s8s8) ran the digits-hard ResNet-18 at 0.53x the fp32 graph's
        # speed on this project's CPU, u8s8 at 1.61x (onnxruntime 1.32, 2 threads, paired).
        with _quiet_root_logger():
            quantize_static(str(fp32), str(int8), _Batches(calibration),
                            quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        return int8.read_bytes()


class OnnxModule(nn.Module):
    """An ONNX graph run by ONNX Runtime, called like the module it came from (one tensor in,
    the first output back as a tensor). Not trainable; `graph` holds the bytes."""

    def __init__(self, graph: bytes, threads: int = 1):
        super().__init__()
        self.graph = graph
        self._session = cpu_session(graph, threads)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        outputs = self._session.run(None, {"input": inputs.detach().cpu().float().numpy()})
        return torch.from_numpy(outputs[0])
