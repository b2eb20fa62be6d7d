"""The benchmark: its figures on known points, and a reduced `autoprune bench` run end to end."""

from __future__ import annotations

import importlib.util
import json

import pytest
import timm

from autoprune.bench import accuracy_at, front, hypervolume_2d
from autoprune.cli import main
from autoprune.models import save_timm_checkpoint


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


@pytest.mark.slow
def test_reduced_bench_runs_every_method_from_the_command_line(tmp_path, capsys):
    """`autoprune bench` on a quarter-width ResNet-18 and the digits data, seconds per method."""
    narrow = {"channels": [32, 64, 128, 256], "stem_width": 32}
    model = timm.create_model("resnet18", num_classes=10, **narrow)
    checkpoint = save_timm_checkpoint(model.eval(), "resnet18", 10, tmp_path / "tiny.safetensors",
                                      {"timm_kwargs": narrow})
    code = main(["bench", "--model", str(checkpoint), "--budget", "6s", "--finetune-steps", "2",
                 "--ratios", "0.2,0.4", "--threads", "1", "--output-dir", str(tmp_path),
                 "--name", "ci"])
    assert code == 0
    results = json.loads((tmp_path / "benchmarks" / "ci" / "results.json").read_text())
    fastnas_installed = importlib.util.find_spec("modelopt") is not None
    expected = {"uniform", "global", "random", "autoprune"} | ({"fastnas"} if fastnas_installed else set())
    assert set(results["methods"]) == expected, results["skipped"]
    base = results["unpruned"]
    for model in results["models"]:
        assert model["latency_ms"] > 0 and 0 <= model["accuracy"] <= 1
        assert model["macs"] < base["macs"]
    for summary in results["methods"].values():
        assert 0 <= summary["hypervolume"] <= 1 and 0 <= summary["overhead_share"] <= 1
    assert results["machine"]["threads"] == 1 and results["command"].startswith("autoprune bench")
    page = (tmp_path / "benchmarks" / "ci" / "comparison.html").read_text()
    assert "Plotly.newPlot" in page and "<script src" not in page
    printed = capsys.readouterr().out
    assert "autoprune" in printed and "results.json" in printed
