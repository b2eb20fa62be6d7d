"""Warm starts derived from the structure and the latency model (study/warm_starts.py)."""

from dataclasses import replace

import pytest

from autoprune.pruning.grouping import PruningDimension
from autoprune.study.space import SEARCH_SPACES_DIR, load_search_space
from autoprune.study.warm_starts import derived_warm_starts


def dims(*specs: str) -> list[PruningDimension]:
    return [PruningDimension(name=spec.split(":")[0], kind=spec.split(":")[1], layers=(),
                             channels=64) for spec in specs]


class LinearLatency:
    """A stand-in latency model: each dimension's cut saves its share of the time, linearly.
    The stream saves more per ratio than the inner widths (it touches every block)."""

    saving = {"stream": 0.5, "inner": 0.25}

    def __init__(self, dimensions):
        self.kinds = {d.name: d.kind for d in dimensions}

    def relative(self, sparsity):
        per_kind = {}
        for name, ratio in sparsity.items():
            per_kind.setdefault(self.kinds[name], []).append(ratio)
        saved = sum(self.saving[kind] * sum(ratios) / len(ratios)
                    for kind, ratios in per_kind.items())
        return 1.0 - 0.9 * saved


@pytest.fixture
def resnet_space():
    return load_search_space(SEARCH_SPACES_DIR / "resnet.yaml")  # stream <= 0.8, inner <= 0.9


DIMENSIONS = dims("layer1:stream", "layer1.inner:inner", "layer2:stream", "layer2.inner:inner")


def test_derived_starts_cut_inner_widths_first_and_the_stream_only_beyond_them(resnet_space):
    starts = derived_warm_starts(resnet_space, DIMENSIONS, LinearLatency(DIMENSIONS), 3)
    assert len(starts) == 3
    speedups = [speedup for speedup, _ in starts]
    assert speedups == sorted(speedups) and speedups[0] > 1.0
    # Inner widths alone reach 1/(1 - 0.9 * 0.25 * 0.9) = 1.25x; the fastest point is 2.29x:
    # goals 1.23x, 1.51x, 1.86x. The first needs the stream not at all, the others do, with
    # the inner widths at their cap.
    first, second, third = (ratios for _, ratios in starts)
    assert first["stream"] == 0.0 and 0.0 < first["inner"] < 0.9
    assert second["inner"] == third["inner"] == 0.9
    assert 0.0 < second["stream"] < third["stream"] <= 0.8
    for ratios in (first, second, third):  # on the grid the sampler draws from
        assert all(abs(r / 0.05 - round(r / 0.05)) < 1e-9 for r in ratios.values())
    # each point is about as fast as asked: evenly spread in log between 1x and the fastest
    fastest = 1 / LinearLatency(DIMENSIONS).relative(
        {"layer1": 0.8, "layer2": 0.8, "layer1.inner": 0.9, "layer2.inner": 0.9})
    for index, speedup in enumerate(speedups, start=1):
        assert speedup == pytest.approx(fastest ** (index / 4), rel=0.05)


def test_no_derived_starts_without_a_private_kind_or_when_asked_for_none(resnet_space):
    model = LinearLatency(DIMENSIONS)
    assert derived_warm_starts(resnet_space, DIMENSIONS, model, 0) == []
    stream_only = dims("layer1:stream", "layer2:stream")
    assert derived_warm_starts(resnet_space, stream_only, LinearLatency(stream_only), 3) == []
    inner_fixed = replace(resnet_space, sparsity={**resnet_space.sparsity, "inner": (0.0, 0.0)})
    assert derived_warm_starts(inner_fixed, DIMENSIONS, model, 3) == []


def with_derived_starts(count=3):
    return replace(load_search_space(SEARCH_SPACES_DIR / "default.yaml"),
                   derived_warm_starts=count)


@pytest.fixture
def fixed_starts(monkeypatch):
    """Derived starts that do not depend on the tiny model's timing: one per count asked,
    slowest first (the derivation itself is tested above on a stand-in latency model)."""
    import autoprune.study.opening

    asked = []

    def derive(space, dimensions, latency_model, count):
        asked.append(count)
        return [(1.2 + 0.3 * n, {"stream": 0.0, "inner": 0.25 * (n + 1)}) for n in range(count)]

    monkeypatch.setattr(autoprune.study.opening, "derived_warm_starts", derive)
    return asked


def test_a_search_enqueues_the_derived_starts_after_the_references(tiny_search, fixed_starts):
    study = tiny_search(trials=12, search_space=with_derived_starts()).study
    references = [t.user_attrs.get("reference") or "" for t in study.trials]
    assert fixed_starts == [3]
    assert references[:6] == ["uniform 0.2", "uniform 0.4", "uniform 0.6",
                              "derived start: stream 0, inner 0.25 (1.2x predicted)",
                              "derived start: stream 0, inner 0.5 (1.5x predicted)",
                              "derived start: stream 0, inner 0.75 (1.8x predicted)"]
    kinds = {d["name"]: d["kind"] for d in study.user_attrs["settings"]["dimensions"]}
    for trial, inner in zip(study.trials[3:6], (0.25, 0.5, 0.75)):
        for name, ratio in trial.user_attrs["config"]["sparsity"].items():
            assert ratio == {"stream": 0.0, "inner": inner}.get(kinds[name], 0.0), name


@pytest.mark.parametrize("trials, derived", [(4, 0), (8, 1)])
def test_references_leave_the_sampler_at_least_half_of_a_trial_budget(
        tiny_search, fixed_starts, trials, derived):
    study = tiny_search(trials=trials, search_space=with_derived_starts()).study  # 3 uniform first
    assert len(study.trials) == trials  # nothing left waiting in the queue
    assert sum((t.user_attrs.get("reference") or "").startswith("derived start")
               for t in study.trials) == derived


def test_the_shipped_default_enqueues_no_derived_starts(tiny_search):
    study = tiny_search(trials=5).study
    assert not any((t.user_attrs.get("reference") or "").startswith("derived")
                   for t in study.trials)
