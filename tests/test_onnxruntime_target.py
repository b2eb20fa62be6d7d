"""The ONNX Runtime CPU target: it times ONNX sessions paired like any target, a search runs
on it, the exported ONNX file is the graph it timed, and what it cannot run is refused before
any work."""

import onnx
import pytest
import torch
import torch.nn as nn

import autoprune
from autoprune.errors import InvalidInputError
from autoprune.runtime.measure import paired_latency
from autoprune.runtime.onnx_io import onnx_bytes
from autoprune.targets import get_target
from tiny_models import QUICK, TinyResNet, tiny_data

pytest.importorskip("onnxruntime")


def mlp(hidden: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(256, hidden), nn.ReLU(), nn.Linear(hidden, 256)).eval()


def test_the_target_times_onnx_sessions_and_a_narrower_model_reads_faster():
    target = get_target("onnxruntime", "cpu", threads=1)
    assert target.describe().startswith("onnxruntime (ONNX Runtime on the CPU), 1 threads")
    inputs = torch.randn(64, 256)
    # 16x fewer MACs: whatever the machine's noise, the ratio must be well above 1
    paired = paired_latency(mlp(128), mlp(2048), inputs, target, rounds=5, block_seconds=0.02)
    assert 1.5 < paired.speedup < 100


def test_a_search_on_the_onnxruntime_target_exports_the_graph_it_timed(tmp_path):
    train, val = tiny_data()
    fp32_only = tmp_path / "fp32.yaml"  # int8 members export their quantized graph instead
    fp32_only.write_text("family: fp32-only\nprecision: [fp32]\n")
    result = autoprune.search(TinyResNet(), trials=3, train=train, val=val,
                              target="onnxruntime", search_space=fp32_only,
                              output_dir=tmp_path, finetune_steps=2, threads=1, verbose=False,
                              options=QUICK)
    settings = result.study.user_attrs["settings"]
    assert settings["target"].startswith("onnxruntime")
    assert result.study.user_attrs["latency_model"]["target"] == "onnxruntime"
    pick = result.pareto[-1]
    path = result.export(pick, tmp_path / "pick.onnx", format="onnx")
    timed = onnx.load_from_string(onnx_bytes(result.load(pick.trial), torch.zeros(16, 3, 8, 8)))
    written = onnx.load(str(path))
    assert ([n.op_type for n in written.graph.node] == [n.op_type for n in timed.graph.node])
    assert ([list(t.dims) for t in written.graph.initializer]
            == [list(t.dims) for t in timed.graph.initializer])


def test_a_model_the_target_cannot_run_is_refused_before_any_study(tmp_path):
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):  # dict inputs are passed as keywords, as HuggingFace's are
            return self.fc(x)

    data = [({"x": torch.randn(8, 4)}, torch.randint(0, 2, (8,))) for _ in range(2)]
    with pytest.raises(InvalidInputError, match="one tensor input for now; the example inputs "
                                                "are a dict"):
        autoprune.search(TwoInputs(), trials=1, train=data, val=data, target="onnxruntime",
                         output_dir=tmp_path, verbose=False)
    assert not list(tmp_path.rglob("study.db"))
