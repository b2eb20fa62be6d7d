"""Static int8 quantization of a model's ONNX graph (runtime/quantize.py): the graph is a QDQ
graph with int8 weights, it computes what the model computes within quantization error, a
metric scores it like any module, and the ONNX Runtime target times it as it is."""

import onnx
import pytest
import torch
import torch.nn as nn

from autoprune.errors import InvalidInputError
from autoprune.runtime.evaluate import evaluate
from autoprune.runtime.measure import paired_latency
from autoprune.runtime.quantize import OnnxModule, calibration_inputs, quantize_int8
from autoprune.targets import get_target
from tiny_models import TinyResNet, tiny_data

pytest.importorskip("onnxruntime")


def test_an_int8_graph_is_qdq_with_int8_weights_and_tracks_the_model():
    train, val = tiny_data()
    torch.manual_seed(0)
    model = TinyResNet().eval()
    inputs = next(iter(val))[0]
    graph = quantize_int8(model, inputs, calibration_inputs(train, 4))
    loaded = onnx.load_from_string(graph)
    ops = {node.op_type for node in loaded.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert any(t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4
               for t in loaded.graph.initializer)  # convolution weights stored as int8
    int8 = OnnxModule(graph)
    with torch.no_grad():
        expected = model(inputs)
    actual = int8(inputs)
    assert actual.shape == expected.shape
    assert (actual - expected).abs().max() < 0.1 * expected.abs().max() + 0.05
    # scored like any module, with the same metric
    assert 0.0 <= evaluate(int8, val, "cpu") <= 1.0


def test_the_onnxruntime_target_times_an_int8_graph_as_it_is(monkeypatch):
    train, val = tiny_data()
    model = TinyResNet().eval()
    inputs = next(iter(val))[0]
    int8 = OnnxModule(quantize_int8(model, inputs, calibration_inputs(train, 2)))
    exported = []
    import autoprune.targets.onnxruntime_cpu as target_module
    original = target_module.onnx_bytes
    monkeypatch.setattr(target_module, "onnx_bytes",
                        lambda *args: exported.append(1) or original(*args))
    paired = paired_latency(int8, model, inputs, get_target("onnxruntime", "cpu", 1),
                            rounds=3, block_seconds=0.005)
    assert paired.speedup > 0
    assert len(exported) == 1  # the fp32 reference only: the int8 graph is not re-exported


def test_calibration_needs_one_tensor_input():
    batches = [({"x": torch.randn(2, 4)}, torch.zeros(2))]
    with pytest.raises(InvalidInputError, match="one tensor input for now"):
        calibration_inputs(batches, 1)
