"""Static int8 quantization of a model's ONNX graph (runtime/quantize.py): the graph is a QDQ
graph with int8 weights, it computes what the model computes within quantization error, a
metric scores it like any module, and the ONNX Runtime target times it as it is."""

import onnx
import pytest
import torch

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


def test_quantizing_leaves_the_root_logger_alone():
    """ONNX Runtime's quantizer calls logging.warning, which once configured the root logger
    and doubled every progress line of the search."""
    import logging

    train, val = tiny_data()
    root = logging.getLogger()
    handlers = list(root.handlers)  # pytest's own: without them basicConfig would act
    for handler in handlers:
        root.removeHandler(handler)
    try:
        quantize_int8(TinyResNet().eval(), next(iter(val))[0], calibration_inputs(train, 1))
        assert root.handlers == []
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)


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
    paired_latency(int8, model, inputs, get_target("onnxruntime", "cpu", 1), rounds=3,
                   block_seconds=0.005)
    assert len(exported) == 1  # the fp32 reference only: the int8 graph is not re-exported


def test_calibration_needs_one_tensor_input():
    batches = [({"x": torch.randn(2, 4)}, torch.zeros(2))]
    with pytest.raises(InvalidInputError, match="one tensor input for now"):
        calibration_inputs(batches, 1)


def int8_space(tmp_path, precisions="[int8]"):
    path = tmp_path / "int8.yaml"
    path.write_text(f"family: int8-test\nprecision: {precisions}\n")
    return path


def test_an_int8_search_scores_times_and_exports_the_quantized_graph(tmp_path):
    import autoprune
    from tiny_models import QUICK

    train, val = tiny_data()
    result = autoprune.search(TinyResNet(), trials=3, train=train, val=val,
                              target="onnxruntime", search_space=int8_space(tmp_path),
                              output_dir=tmp_path, finetune_steps=2, threads=1, verbose=False,
                              options=QUICK)
    done = [t for t in result.study.trials if t.state.name == "COMPLETE"]
    assert done and all(t.user_attrs["config"]["precision"] == "int8" for t in done)
    assert all(t.user_attrs["fp32_accuracy"] is not None for t in done)
    pick = result.best(precision="int8")
    assert pick.precision == "int8" and "int8" in str(pick)
    # the exported file is the graph the trial scored: the same accuracy on val
    path = result.export(pick, tmp_path / "pick.onnx", format="onnx")
    reloaded = OnnxModule(path.read_bytes())
    assert evaluate(reloaded, val, "cpu") == pytest.approx(pick.accuracy)
    assert evaluate(result.load_int8(pick), val, "cpu") == pytest.approx(pick.accuracy)
    with pytest.raises(InvalidInputError, match="is int8: fine-tuning it fully"):
        result.finetune(pick, epochs=1)


def test_the_default_space_searches_int8_only_where_the_target_runs_it():
    from autoprune.study.space import resolve_search_space

    space = resolve_search_space(TinyResNet(), None)
    assert space.precisions == ("fp32", "int8") and not space.precision_requested
    on_cpu = space.for_target("cpu", get_target("cpu", "cpu", 1).precisions)
    assert on_cpu.precisions == ("fp32",)
    assert "precisions" not in on_cpu.fingerprint()  # studies from before resume
    on_ort = space.for_target("onnxruntime", get_target("onnxruntime", "cpu", 1).precisions)
    assert on_ort.precisions == ("fp32", "int8")


def test_a_space_without_int8_never_quantizes(tmp_path):
    import autoprune
    from tiny_models import QUICK

    train, val = tiny_data()
    result = autoprune.search(TinyResNet(), trials=2, train=train, val=val,
                              target="onnxruntime", search_space=int8_space(tmp_path, "[fp32]"),
                              output_dir=tmp_path, finetune_steps=2, threads=1, verbose=False,
                              options=QUICK)
    for trial in result.study.trials:
        assert "precision" not in trial.params
        assert trial.user_attrs.get("fp32_accuracy") is None
        assert "model.int8.onnx" not in (trial.user_attrs.get("checkpoint_artifacts") or {})


def test_int8_asked_for_on_a_target_that_cannot_run_it_is_refused_before_any_work(tmp_path):
    import autoprune
    from autoprune.errors import SearchSpaceError

    train, val = tiny_data()
    with pytest.raises(SearchSpaceError, match="precision int8 cannot run on target 'cpu'"):
        autoprune.search(TinyResNet(), trials=1, train=train, val=val,
                         search_space=int8_space(tmp_path), output_dir=tmp_path, verbose=False)
    assert not list(tmp_path.rglob("study.db"))


def test_a_time_budgeted_search_tries_each_fp32_front_member_in_int8(tmp_path):
    """An int8 twin quantizes a finished fp32 trial's weights: no pruning or fine-tuning of
    its own, scored by running the int8 graph, timed, and judged on the front."""
    from dataclasses import replace

    import autoprune
    from autoprune.results.report import report_data
    from autoprune.store.records import TrialRecord
    from tiny_models import QUICK

    train, val = tiny_data()
    result = autoprune.search(TinyResNet(), budget=15, train=train, val=val, target="onnxruntime",
                              search_space=int8_space(tmp_path, "[fp32, int8]"),
                              output_dir=tmp_path, finetune_steps=2, threads=1, verbose=False,
                              study_name="s", seed=0, options=replace(QUICK, promote_share=None))
    trials = result.study.trials
    twins = [t for t in trials if TrialRecord.of(t).quantizes is not None
             and t.state.name == "COMPLETE"]
    assert twins, "no fp32 front member was tried in int8"
    for twin in twins:
        record = TrialRecord.of(twin)
        member = trials[record.quantizes]
        known = TrialRecord.of(member)
        assert known.config["precision"] == "fp32" and record.config["precision"] == "int8"
        assert {**member.params, "precision": "int8"} == twin.params
        assert "finetune" not in record.seconds  # seconds, not a trial's fine-tuning
        assert record.finetuned_steps == known.finetuned_steps
        assert record.fp32_accuracy == member.values[0]
        assert record.latency_source == "paired"  # the int8 graph itself was timed
        assert twin.values[2] < member.values[2]  # int8 weights: less memory
    # each member is twinned once, however many times the front was looked at
    members = [TrialRecord.of(t).quantizes for t in trials if TrialRecord.of(t).quantizes is not None]
    assert len(members) == len(set(members))
    on_front = [c for c in result.pareto if TrialRecord.of(trials[c.trial]).quantizes is not None]
    for candidate in on_front:  # a twin on the front is the graph it was scored as
        assert evaluate(result.load_int8(candidate), val, "cpu") == pytest.approx(candidate.accuracy)
    rows = {row.number: row for row in report_data(result.study).rows}
    assert "quantized to int8" in rows[twins[0].number].note


def test_no_twins_when_switched_off_or_int8_is_not_searched(tmp_path):
    from dataclasses import replace

    import autoprune
    from autoprune.store.records import TrialRecord
    from tiny_models import QUICK

    train, val = tiny_data()
    for name, precisions, twins in (("off", "[fp32, int8]", False), ("fp32", "[fp32]", True)):
        result = autoprune.search(TinyResNet(), budget=8, train=train, val=val,
                                  target="onnxruntime", output_dir=tmp_path, study_name=name,
                                  search_space=int8_space(tmp_path, precisions),
                                  finetune_steps=2, threads=1, verbose=False,
                                  options=replace(QUICK, promote_share=None, int8_twins=twins))
        assert all(TrialRecord.of(t).quantizes is None for t in result.study.trials)
