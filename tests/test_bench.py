"""The benchmark: its figures on known points, and a reduced `autoprune bench` run end to end."""

from __future__ import annotations

import importlib.util
import json

import pytest
import timm

from autoprune.bench.scoring import (BenchModel, accuracy_at, aggregate, front, hypervolume_2d,
                                     offered, picked_at, share_to_reach, summarise)
from autoprune.cli import main
from autoprune.integrations.models import save_named_checkpoint


def test_front_keeps_only_non_dominated_points_by_speedup():
    points = [(1.5, 0.9), (2.0, 0.95), (3.0, 0.8), (2.5, 0.7), (1.2, 0.99)]
    assert front(points) == [(1.2, 0.99), (2.0, 0.95), (3.0, 0.8)]


def test_hypervolume_is_the_area_over_time_saved_and_accuracy():
    # one point at 2x (half the time saved) and accuracy 0.8: a 0.5 x 0.8 rectangle
    assert hypervolume_2d([(2.0, 0.8)]) == pytest.approx(0.4)
    # adding a 4x point at 0.5 adds (0.75 - 0.5) x 0.5
    assert hypervolume_2d([(2.0, 0.8), (4.0, 0.5)]) == pytest.approx(0.4 + 0.125)
    # a dominated point adds nothing
    assert hypervolume_2d([(2.0, 0.8), (4.0, 0.5), (1.5, 0.7)]) == pytest.approx(0.525)


def test_accuracy_at_a_speedup_is_interpolated_on_the_front():
    points = [(2.0, 0.9), (4.0, 0.7)]
    assert accuracy_at(points, 3.0) == pytest.approx(0.8)
    assert accuracy_at(points, 1.5) == pytest.approx(0.9)  # a faster model already does it
    assert accuracy_at(points, 5.0) is None                # the front never gets that fast


def _model(label, latency_ms, select, test):
    return BenchModel("autoprune", label, None, 1.0, 0.1, accuracy=test, select_accuracy=select,
                      latency_ms=latency_ms)


BASE = _model("unpruned", 10.0, 0.99, 0.99)


def test_a_method_offers_only_models_no_faster_one_beats_on_selection():
    slow_good = _model("a", 5.0, 0.98, 0.97)       # 2x
    fast_lucky = _model("b", 2.5, 0.98, 0.90)      # 4x, as good on selection: a is not offered
    fast_bad = _model("c", 2.0, 0.80, 0.99)        # 5x, worse on selection but offered
    chosen = offered([slow_good, fast_lucky, fast_bad], BASE)
    assert [m.label for m in chosen] == ["b", "c"]  # test accuracy plays no part
    # under autoprune's front floor on selection accuracy (every method alike), c is not
    # offered, and a (beaten only by b) still is not
    assert [m.label for m in offered([slow_good, fast_lucky, fast_bad], BASE, 0.9)] == ["b"]
    assert picked_at([slow_good, fast_lucky, fast_bad], BASE, 5.0, floor=0.9) is None


def test_the_picked_model_is_chosen_on_selection_and_scored_on_test():
    models = [_model("a", 5.0, 0.97, 0.99), _model("b", 4.0, 0.98, 0.95), _model("c", 2.0, 0.9, 0.9)]
    assert picked_at(models, BASE, 2.0) == pytest.approx(0.95)   # b: best selection at >= 2x
    assert picked_at(models, BASE, 3.0) == pytest.approx(0.90)   # only c is 3x fast
    assert picked_at(models, BASE, 6.0) is None


def test_the_budget_to_reach_uniform_counts_only_models_finished_by_then():
    def timed(method, latency_ms, accuracy, finished):
        model = _model(method, latency_ms, accuracy, accuracy)
        model.method, model.finished_seconds, model.macs = method, finished, 1
        return model

    base = _model("unpruned", 10.0, 0.99, 0.99)
    base.macs = 4
    uniform = [timed("uniform", 5.0, 0.8, 50.0), timed("uniform", 2.5, 0.5, 100.0)]
    # hypervolume 0.5 * 0.8 + 0.25 * 0.5 = 0.525; the search's 2x model alone gives 0.45,
    # with its 4x model (finished at 30 of 120 s) 0.45 + 0.25 * 0.6 = 0.6
    search = [timed("autoprune", 5.0, 0.9, 10.0), timed("autoprune", 2.5, 0.6, 30.0),
              timed("autoprune", 2.0, 0.1, 60.0)]
    assert share_to_reach(search, base, 0.525, 120.0) == pytest.approx(0.25)
    assert share_to_reach(search[:1], base, 0.525, 120.0) is None
    summary = summarise(uniform + search, base, walls={"uniform": 100.0, "autoprune": 120.0})
    assert summary["autoprune"]["budget_to_uniform_hypervolume"] == pytest.approx(0.25)
    assert summary["uniform"]["budget_to_uniform_hypervolume"] == pytest.approx(1.0)
    assert set(summary["autoprune"]["picked_at_speedup"]) == {"1.5x", "2x", "3x", "4x", "5x",
                                                              "6x", "8x"}


def test_repeats_are_summarised_as_mean_min_and_max():
    def run(hv, at2):
        return {"methods": {"uniform": {
            "hypervolume": hv, "speedup_per_mac_reduction_median": 0.5, "overhead_share": 0.1,
            "wall_seconds": 10.0, "accuracy_at_speedup": {"2x": at2},
            "picked_at_speedup": {"2x": at2}}}}
    merged = aggregate([run(0.6, 0.9), run(0.8, 0.8)])["uniform"]
    assert merged["repeats"] == 2
    assert merged["hypervolume"] == pytest.approx({"mean": 0.7, "min": 0.6, "max": 0.8})
    assert merged["picked_at_speedup"]["2x"]["mean"] == pytest.approx(0.85)
    one_missing = aggregate([run(0.6, 0.9), run(0.8, None)])["uniform"]
    assert one_missing["accuracy_at_speedup"]["2x"] is None   # not reached in every repeat


def test_unknown_methods_are_refused_before_any_model_is_loaded(tmp_path, capsys):
    code = main(["bench", "--model", str(tmp_path / "missing.safetensors"), "--methods", "uniform,magic",
                 "--output-dir", str(tmp_path)])
    assert code == 2 and "magic" in capsys.readouterr().err


@pytest.mark.slow
def test_reduced_bench_runs_every_method_from_the_command_line(tmp_path, capsys):
    """`autoprune bench` on a quarter-width ResNet-18 and the digits data, seconds per method."""
    narrow = {"channels": [32, 64, 128, 256], "stem_width": 32}
    model = timm.create_model("resnet18", num_classes=10, **narrow)
    checkpoint = save_named_checkpoint(model.eval(), "resnet18", 10, tmp_path / "tiny.safetensors",
                                      {"timm_kwargs": narrow})
    # the budget covers each search's set-up too: measuring the unpruned model and building
    # its latency model take several seconds of it before the first trial
    # untrained, it scores near chance: no front floor, or whole fronts would vanish at random
    code = main(["bench", "--model", str(checkpoint), "--budget", "15s", "--finetune-steps", "2",
                 "--ratios", "0.2,0.4", "--threads", "1", "--output-dir", str(tmp_path),
                 "--name", "ci", "--repeats", "2", "--front-floor-share", "off",
                 "--promote-share", "off"])
    assert code == 0
    results = json.loads((tmp_path / "benchmarks" / "ci" / "results.json").read_text())
    fastnas_installed = importlib.util.find_spec("modelopt") is not None
    expected = {"uniform", "global", "random", "autoprune"} | ({"fastnas"} if fastnas_installed else set())
    assert set(results["methods"]) == expected, results["skipped"]
    assert results["repeats"] == 2 and [run["seed"] for run in results["runs"]] == [0, 1]
    first, second = results["runs"]
    assert first["splits"] == second["splits"] == {"train": 1437, "select": 180, "test": 180}
    for run in results["runs"]:
        base = run["unpruned"]
        for model in run["models"]:
            assert model["latency_ms"] > 0 and 0 <= model["accuracy"] <= 1
            assert 0 <= model["select_accuracy"] <= 1 and model["macs"] < base["macs"]
    for summary in results["methods"].values():
        assert summary["repeats"] == 2
        assert 0 <= summary["hypervolume"]["min"] <= summary["hypervolume"]["max"] <= 1
        assert 0 <= summary["overhead_share"]["mean"] <= 1
    assert results["machine"]["threads"] == 1 and results["command"].startswith("autoprune bench")
    assert results["data"]["name"] == "digits" and results["data"]["held_out"] == 360
    assert results["front_floor_share"] is None and first["accuracy_floor"] == 0
    assert results["promote_share"] is None  # promotion off: tests/test_promotion.py has it
    # --equal-budget (the default): each sweep model fine-tunes longer than a search's trial,
    # to spend the 15 s a search gets; the searches' models keep the recipe's 2 steps (with
    # promotion off)
    for run in results["runs"]:
        for model in run["models"]:
            if model["method"] in ("uniform", "global"):
                assert model["finetune_steps"] > 2, model
            elif model["method"] in ("random", "autoprune"):
                assert model["finetune_steps"] == 2
        assert run["methods"]["uniform"]["wall_seconds"] > 0.5 * 15
    page = (tmp_path / "benchmarks" / "ci" / "comparison.html").read_text()
    assert "Plotly.newPlot" in page and "<script src" not in page
    printed = capsys.readouterr().out
    assert "autoprune" in printed and "results.json" in printed


def test_latency_figures_compare_in_trial_speedups_with_the_final_re_timing():
    import optuna

    from autoprune.bench.run import latency_figures

    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    trials = [  # (speedup in the trial, predicted ms, how it was timed)
        (2.0, 10.5, "paired"), (4.0, 5.0, "paired"), (3.0, 6.0, "predicted: dominated")]
    for speedup, predicted, source in trials:
        study.enqueue_trial({}, user_attrs={
            "speedup": speedup, "predicted_latency_ms": predicted, "latency_source": source,
            "measurement": {"latency_ms": 20.0 / speedup}})
        study.optimize(lambda t: (0.9, 1.0, 1.0), n_trials=1)
    # final re-timing: trial 0 at 2.1x (within 10 %), trial 1 at 3.0x (not)
    study.set_user_attr("final_latency_ms", {"baseline": 21.0, "0": 10.0, "1": 7.0})
    figures = latency_figures(study)
    assert figures["front_speedup_within_10pct"] == 0.5
    # only timed trials count: 10.5 against 10 (5 % off), 5 against 5 (exact)
    assert figures["prediction_within_10pct"] == 1.0
    assert figures["prediction_median_abs_error"] == pytest.approx(0.025)


def test_latency_figures_also_score_the_reading_alone():
    import optuna

    from autoprune.bench.run import latency_figures

    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    # the search acted on 2.0x (the estimate); the paired reading alone said 2.5x
    study.enqueue_trial({}, user_attrs={
        "speedup": 2.0, "paired_latency": {"speedup": 2.5}, "predicted_latency_ms": 8.0,
        "latency_source": "paired", "measurement": {"latency_ms": 10.0}})
    study.optimize(lambda t: (0.9, 1.0, 1.0), n_trials=1)
    study.set_user_attr("final_latency_ms", {"baseline": 21.0, "0": 10.0})  # 2.1x at the end
    figures = latency_figures(study)
    assert figures["front_speedup_within_10pct"] == 1.0  # 2.0 against 2.1
    assert figures["front_reading_within_10pct"] == 0.0  # 2.5 against 2.1
    # the prediction (8 ms) is scored against the reading's latency, 10 x 2 / 2.5 = 8 ms
    assert figures["prediction_median_abs_error"] == pytest.approx(0.0)


def test_a_committed_run_s_comparison_page_is_rebuilt_from_its_results(tmp_path):
    from pathlib import Path

    from autoprune.bench.report import main as rebuild

    results = (Path(__file__).parent.parent / "reports" / "benchmarks"
               / "resnet18-digits-cpu-3x-paired-latency" / "results.json")
    assert rebuild([str(results), str(tmp_path / "page.html")]) == 0
    page = (tmp_path / "page.html").read_text()
    assert page.count("Plotly.newPlot") == 3 and "<script src" not in page  # one per repeat
    assert rebuild([]) == 2


def test_int8_figures_compare_each_int8_model_with_its_fp32_twin():
    def int8(label, latency_ms, accuracy, fp32_latency_ms, fp32_accuracy, select=0.9):
        model = _model(label, latency_ms, select, accuracy)
        model.method, model.precision, model.macs = "uniform-int8", "int8", 1
        model.fp32_latency_ms, model.fp32_accuracy = fp32_latency_ms, fp32_accuracy
        return model

    base = _model("unpruned", 10.0, 0.99, 0.99)
    base.macs = 4
    models = [int8("a", 4.0, 0.90, 6.0, 0.91), int8("b", 2.0, 0.80, 2.0, 0.80, 0.8),
              int8("c", 1.0, 0.70, 3.0, 0.75, 0.7)]
    figures = summarise(models, base)["uniform-int8"]
    assert figures["int8_models"] == 3 and figures["offered_int8"] == 3
    assert figures["int8_speedup_over_fp32_median"] == pytest.approx(1.5)  # of 1.5, 1.0, 3.0
    assert figures["int8_accuracy_cost_median"] == pytest.approx(0.01)   # of 0.01, 0.0, 0.05
    # a repeat without int8 models (a search may offer none) is left out of the spread
    fp32 = _model("d", 5.0, 0.9, 0.9)
    fp32.macs = 2
    fp32_only = summarise([fp32], base)["autoprune"]
    assert fp32_only["int8_models"] == 0 and fp32_only["int8_speedup_over_fp32_median"] is None
    joint = summarise([replace_method(m, "autoprune") for m in models], base)["autoprune"]
    merged = aggregate([{"methods": {"autoprune": joint}},
                        {"methods": {"autoprune": fp32_only}}])["autoprune"]
    assert merged["repeats_with_int8"] == 1
    assert merged["int8_speedup_over_fp32_median"]["mean"] == pytest.approx(1.5)


def replace_method(model, method):
    from dataclasses import replace
    return replace(model, method=method)


def test_int8_methods_are_refused_on_a_target_without_int8_before_any_model_is_loaded(
        tmp_path, capsys):
    code = main(["bench", "--model", str(tmp_path / "missing.safetensors"),
                 "--methods", "uniform,uniform-int8", "--output-dir", str(tmp_path)])
    assert code == 2
    error = capsys.readouterr().err
    assert "uniform-int8" in error and "onnxruntime" in error
    assert not (tmp_path / "benchmarks").exists()


def test_uniform_int8_quantizes_each_sweep_point_and_times_it_beside_its_fp32_twin(tmp_path):
    """On the ONNX Runtime target, each uniform model's int8 graph is scored by running it and
    timed with the fp32 model it came from."""
    pytest.importorskip("onnxruntime")
    narrow = {"channels": [16, 32, 64, 128], "stem_width": 16}
    model = timm.create_model("resnet18", num_classes=10, **narrow)
    checkpoint = save_named_checkpoint(model.eval(), "resnet18", 10, tmp_path / "tiny.safetensors",
                                      {"timm_kwargs": narrow})
    code = main(["bench", "--model", str(checkpoint), "--target", "onnxruntime",
                 "--methods", "uniform,uniform-int8", "--finetune-steps", "2", "--no-equal-budget",
                 "--ratios", "0.3,0.6", "--threads", "1", "--output-dir", str(tmp_path),
                 "--name", "ort", "--front-floor-share", "off"])
    assert code == 0
    results = json.loads((tmp_path / "benchmarks" / "ort" / "results.json").read_text())
    assert results["target"] == "onnxruntime"
    run = results["runs"][0]
    uniform = {m["label"]: m for m in run["models"] if m["method"] == "uniform"}
    quantized = {m["label"]: m for m in run["models"] if m["method"] == "uniform-int8"}
    assert sorted(quantized) == ["uniform-int8 0.3", "uniform-int8 0.6"]
    for label, model in quantized.items():
        twin = uniform[label.replace("uniform-int8", "uniform")]
        assert model["precision"] == "int8" and twin["precision"] == "fp32"
        assert model["macs"] == twin["macs"]              # the same pruned architecture
        assert model["fp32_accuracy"] == twin["accuracy"]  # its twin, scored alike
        assert model["fp32_latency_ms"] > 0 and model["latency_ms"] > 0
    summary = run["methods"]["uniform-int8"]
    assert summary["int8_models"] == 2 and summary["int8_speedup_over_fp32_median"] > 0
    assert "uniform" in run["methods"] and "int8_speedup_over_fp32_median" in run["methods"]["uniform"]
    assert run["methods"]["uniform"]["int8_models"] == 0
