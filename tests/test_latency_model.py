"""The latency model: widths as Torch-Pruning keeps them, predictions that fall with width,
constraints checked before pruning, and a table stored once per study."""

import pytest
import torch
from optuna.trial import TrialState
from tiny_models import QUICK, TinyResNet

import autoprune.study.prepared
import autoprune.study.runner
from autoprune.errors import InvalidInputError
from autoprune.runtime.latency_model import (LatencyModel, kept_width, prediction_errors,
                                             time_layers)
from autoprune.study.options import SearchOptions
from autoprune.study.prepared import PreparedModel
from autoprune.study.space import resolve_search_space
from autoprune.targets import get_target

CPU = get_target("cpu", "cpu", threads=1)


@pytest.fixture(scope="module")
def prepared():
    torch.manual_seed(0)
    model = TinyResNet().eval()
    return PreparedModel.build(model, torch.randn(16, 3, 8, 8), resolve_search_space(model, None))


def mac_proportional_model(prepared) -> LatencyModel:
    """The prepared model's latency model with every table time proportional to MACs: no
    timing noise in the geometry, so a test sees the calibration alone."""
    model = time_layers(prepared.model, prepared.example_inputs, prepared.dimensions, CPU,
                        prepared.space.round_to, rounds=1, block_seconds=0.0002)
    for layer in model.layers:
        layer.ms = [[1e-4 * (i or 1) * o for o in layer.out_widths] for i in layer.in_widths]
    return model


def test_kept_width_follows_torch_pruning_rounding():
    assert kept_width(64, 0.0) == 64
    assert kept_width(64, 0.3) == 44                  # int(64 * 0.7)
    assert kept_width(64, 0.3, round_to=8) == 40      # rounded down to a multiple
    assert kept_width(64, 0.9, round_to=8) == 64      # it would empty the group: left whole
    assert kept_width(192, 0.5, heads=3) == 64        # ceil(1.5) = 2 heads of 3 removed


def test_predicted_widths_are_those_the_pruned_model_has(prepared):
    model = time_layers(prepared.model, prepared.example_inputs, prepared.dimensions, CPU,
                        prepared.space.round_to, rounds=1, block_seconds=0.0002)
    sparsity = {dim.name: 0.25 + 0.25 * (i % 3) for i, dim in enumerate(prepared.dimensions)}
    modules = dict(prepared.prune(sparsity).model.named_modules())
    widths = model.widths(sparsity)
    assert widths  # every pruned conv is tabled
    for name, (in_width, out_width) in widths.items():
        layer = modules[name]
        kept = ((layer.in_features, layer.out_features) if isinstance(layer, torch.nn.Linear)
                else (layer.in_channels, layer.out_channels))
        assert kept == (in_width, out_width), name


def test_prediction_falls_monotonically_as_every_width_shrinks(prepared):
    model = time_layers(prepared.model, prepared.example_inputs, prepared.dimensions, CPU,
                        prepared.space.round_to, rounds=2, block_seconds=0.0005)
    model.coefficients = (0.1, 0.8, 0.1)
    predictions = [model.relative({dim.name: ratio for dim in prepared.dimensions})
                   for ratio in (0.0, 0.2, 0.4, 0.6, 0.8)]
    assert predictions[0] == pytest.approx(1.0)
    assert all(wider >= narrower for wider, narrower in zip(predictions, predictions[1:]))
    assert predictions[-1] < predictions[0]


def test_the_model_survives_a_round_trip_through_json_data(prepared):
    import json

    model = time_layers(prepared.model, prepared.example_inputs, prepared.dimensions, CPU,
                        prepared.space.round_to, rounds=1, block_seconds=0.0002)
    again = LatencyModel.from_dict(json.loads(json.dumps(model.to_dict())))
    sparsity = {dim.name: 0.5 for dim in prepared.dimensions}
    assert again.relative(sparsity) == model.relative(sparsity)


def test_prediction_errors_count_the_share_within_ten_percent():
    errors = prediction_errors([(1.0, 1.0), (1.05, 1.0), (1.2, 1.0), (0.5, 1.0)])
    assert errors["count"] == 4
    assert errors["within_10pct"] == 0.5
    assert errors["median_abs_error"] == pytest.approx((0.05 + 0.2) / 2)


def test_every_completed_trial_records_its_prediction_and_speedup(tiny_search):
    result = tiny_search(trials=6)
    completed = [t for t in result.study.trials if t.state == TrialState.COMPLETE]
    assert len(completed) == 6
    baseline = result.study.user_attrs["baseline"]["latency_ms"]
    for trial in completed:
        assert trial.user_attrs["predicted_latency_ms"] > 0
        assert trial.values[1] == pytest.approx(baseline / trial.user_attrs["speedup"])
        if trial.user_attrs["latency_source"] == "paired":
            assert trial.user_attrs["paired_latency"]["rounds"] >= QUICK.latency_rounds
            # the estimate lies between the reading and the prediction
            reading = trial.user_attrs["paired_latency"]["speedup"]
            predicted = baseline / trial.user_attrs["predicted_latency_ms"]
            assert (min(reading, predicted) * 0.999 <= trial.user_attrs["speedup"]
                    <= max(reading, predicted) * 1.001)
        else:  # not timed: its predicted point was dominated by a timed trial
            assert trial.values[1] == pytest.approx(trial.user_attrs["predicted_latency_ms"])
    front = {c.trial for c in result.pareto}
    assert front and all(result.study.trials[n].user_attrs["latency_source"] == "paired"
                         for n in front)


def test_only_a_trial_that_could_join_the_front_is_timed():
    import optuna

    from autoprune.runtime.measure import Measurement
    from autoprune.study.trial import _worth_timing

    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    study.enqueue_trial({}, user_attrs={"latency_source": "paired"})
    study.optimize(lambda t: (0.9, 10.0, 5.0), n_trials=1)

    def figures(latency_ms, memory_mb=5.0):
        return Measurement(latency_ms, 0.0, memory_mb, memory_mb, 0.0, 1, 1)

    assert not _worth_timing(study, 0.8, figures(20.0), margin=0.15)  # slower and worse
    assert _worth_timing(study, 0.8, figures(11.0), margin=0.15)      # might be faster
    assert _worth_timing(study, 0.95, figures(20.0), margin=0.15)     # more accurate
    assert _worth_timing(study, 0.8, figures(20.0, memory_mb=1.0), margin=0.15)  # smaller


def test_a_latency_limit_rejects_before_pruning_and_records_the_excess(tiny_search,
                                                                       monkeypatch):
    real, calls = autoprune.study.prepared.prune_copy, []
    monkeypatch.setattr(autoprune.study.prepared, "prune_copy",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    # a limit no configuration reaches is refused at start-up (test_bad_inputs); here the
    # per-trial rejection itself is under test, so that refusal is switched off
    monkeypatch.setattr(autoprune.study.runner, "check_reachable_latency", lambda *a, **k: None)
    result = tiny_search(trials=3, constraints={"latency_ms": 1e-6})
    # the pre-flight check and the latency model's calibration copies; no trial prunes
    assert len(calls) == 1 + QUICK.calibration_points
    completed = [t for t in result.study.trials if t.state == TrialState.COMPLETE]
    assert len(completed) == 3
    for trial in completed:
        predicted = trial.user_attrs["predicted_latency_ms"]
        assert "predicted latency" in trial.user_attrs["rejected_before_pruning"]
        assert "measurement" not in trial.user_attrs
        assert trial.constraints["latency_ms"] == pytest.approx(predicted - 1e-6)
    assert result.pareto == []


def test_a_resumed_study_or_a_joining_worker_reuses_the_stored_table(tiny_search, monkeypatch):
    model = TinyResNet()
    first = tiny_search(model=model, trials=2)
    stored = first.study.user_attrs["latency_model"]

    def must_not_rebuild(*args, **kwargs):
        raise AssertionError("the latency table was built again")

    monkeypatch.setattr(autoprune.study.latency, "build_latency_model", must_not_rebuild)
    second = tiny_search(model=model, trials=3)
    assert second.study.user_attrs["latency_model"] == stored
    assert len([t for t in second.study.trials if t.state == TrialState.COMPLETE]) == 3


def test_calibration_fits_a_known_relation_with_non_negative_slopes():
    from autoprune.runtime.latency_model import _fit_nonnegative_slopes

    features = [(1.0, 1.0), (0.5, 0.8), (0.3, 0.2), (0.7, 0.4)]
    exact = [0.1 + 0.6 * a + 0.3 * b for a, b in features]
    assert _fit_nonnegative_slopes(features, exact, [1] * 4) == pytest.approx((0.1, 0.6, 0.3))
    falling = [1.2 - 0.5 * b + 0.1 * a for a, b in features]  # a negative slope is not allowed
    a, b, c = _fit_nonnegative_slopes(features, falling, [1] * 4)
    assert b >= 0 and c >= 0


def test_calibration_sets_aside_a_reading_caught_by_a_burst_of_load(prepared):
    from autoprune.runtime.latency_model import calibrate

    model = mac_proportional_model(prepared)
    sparsities = [{dim.name: ratio for dim in prepared.dimensions}
                  for ratio in (0.1, 0.3, 0.5, 0.7, 0.2, 0.6)]
    truth = [0.05 + 0.95 * model.relative_features(s)[0] for s in sparsities]
    readings = truth[:5] + [truth[5] * 2.5]  # the last one read while another job ran
    calibrate(model, list(zip(sparsities, readings)))
    assert [point["outlier"] for point in model.calibration] == [False] * 5 + [True]
    for sparsity, expected in zip(sparsities, truth):
        assert model.relative(sparsity) == pytest.approx(expected, rel=0.02)


def test_calibration_sets_aside_at_most_a_quarter_of_its_readings(prepared):
    import random

    from autoprune.runtime.latency_model import calibrate

    model = mac_proportional_model(prepared)
    draw = random.Random(1)
    sparsities = [{dim.name: round(draw.uniform(0.05, 0.85), 2) for dim in prepared.dimensions}
                  for _ in range(10)]
    truth = [0.05 + 0.95 * model.relative_features(s)[0] for s in sparsities]
    # paired timing's noise, every reading within 6 %: no burst of load to set aside, yet
    # removing one reading at a time without a limit set 4 of these 10 aside
    noise = [0.057, -0.013, -0.042, 0.057, 0.036, 0.015, 0.048, 0.015, -0.057, 0.031]
    calibrate(model, [(s, t * (1 + n)) for s, t, n in zip(sparsities, truth, noise)])
    assert sum(point["outlier"] for point in model.calibration) <= 2
    for sparsity, expected in zip(sparsities, truth):
        assert model.relative(sparsity) == pytest.approx(expected, rel=0.1)


def test_calibration_keeps_its_fastest_reading_and_predicts_the_fast_end_from_it(prepared):
    from autoprune.runtime.latency_model import calibrate

    model = mac_proportional_model(prepared)
    sparsities = [{dim.name: ratio for dim in prepared.dimensions}
                  for ratio in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.85)]
    truth = [0.06 + 0.94 * model.relative_features(s)[0] for s in sparsities]
    # the fastest models run slower than in proportion to their table (fixed costs), true
    # readings that a fit of the slower points alone, extrapolated, cannot predict
    truth[-2] *= 1.15
    truth[-1] *= 1.35
    calibrate(model, list(zip(sparsities, truth)))
    assert not model.calibration[-1]["outlier"]
    assert model.relative(sparsities[-1]) == pytest.approx(truth[-1], rel=0.2)


def test_the_reference_latency_is_settled_over_the_calibrations_readings(tiny_search):
    import statistics

    result = tiny_search(trials=2)
    baseline = result.study.user_attrs["baseline"]
    readings = result.study.user_attrs["latency_model"]["reference_ms"]
    assert len(readings) == QUICK.calibration_points
    assert baseline["latency_ms"] == pytest.approx(
        statistics.median([baseline["first_latency_ms"], *readings]))


def test_each_trial_predicts_with_the_calibration_refitted_on_the_latest_timed_trials(prepared):
    import optuna
    from optuna.trial import create_trial

    from autoprune.runtime.latency_model import calibrate
    from autoprune.study.latency import recalibrated

    model = mac_proportional_model(prepared)
    dims = [dim.name for dim in prepared.dimensions]

    def sparsity(ratio, step=0.0):
        return {name: min(0.9, ratio + step * (i % 3)) for i, name in enumerate(dims)}

    def table(s):
        return model.relative_features(s)[0]

    calibrate(model, [(sparsity(r), 0.05 + 0.95 * table(sparsity(r))) for r in (0.2, 0.4, 0.6)])
    stored = model.coefficients
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    assert recalibrated(model, study) is model  # nothing timed yet

    def trial(s, relative, **facts):
        attrs = {"config": {"sparsity": s, "precision": "fp32"}, "latency_source": "paired",
                 "speedup": 1 / relative, **facts}
        study.add_trial(create_trial(values=[0.9, relative, 1.0], user_attrs=attrs))

    # since the calibration, load has made small models relatively slower (the unpruned one
    # is 1.0 by definition): every timed trial reads 0.15 + 0.85 x table
    drifted = [sparsity(0.1 + 0.05 * k, 0.1) for k in range(10)]
    for s in drifted:
        trial(s, 0.15 + 0.85 * table(s))
    refitted = recalibrated(model, study)
    trial(drifted[0], 5.0, latency_source="predicted")  # never timed: its latency is a guess
    trial(drifted[0], 5.0, config={"sparsity": drifted[0], "precision": "int8"})
    assert recalibrated(model, study).coefficients == refitted.coefficients
    assert model.coefficients == stored  # the stored model stays as built

    for ratio in (0.15, 0.35, 0.55, 0.75):
        s = sparsity(ratio, 0.05)
        truth = 0.15 + 0.85 * table(s)
        assert refitted.relative(s) == pytest.approx(truth, rel=0.03)
        assert abs(model.relative(s) - truth) > abs(refitted.relative(s) - truth)


def test_a_timed_speedup_is_the_reading_bent_a_third_toward_the_prediction():
    from autoprune.study.latency import estimated_speedup

    assert estimated_speedup(3.0, 3.0, 1 / 3) == pytest.approx(3.0)
    # a geometric mean: reading 4x, prediction 2x, weight 1/3 -> 4 ** (2/3) * 2 ** (1/3)
    assert estimated_speedup(4.0, 2.0, 1 / 3) == pytest.approx(2 ** (5 / 3))
    assert estimated_speedup(4.0, None, 1 / 3) == 4.0   # nothing predicted (int8)
    assert estimated_speedup(4.0, 2.0, 0.0) == 4.0      # weight 0: the reading alone
    with pytest.raises(InvalidInputError, match="latency_prediction_weight"):
        SearchOptions(latency_prediction_weight=1.0)


def test_a_latency_model_that_misses_its_own_points_bends_no_reading(prepared):
    from autoprune.runtime.latency_model import calibrate
    from autoprune.study.latency import prediction_weight

    model = mac_proportional_model(prepared)
    dims = [dim.name for dim in prepared.dimensions]
    points = [({name: ratio for name in dims}, relative)
              for ratio, relative in ((0.2, 0.8), (0.4, 0.6), (0.6, 0.45), (0.8, 0.3))]
    calibrate(model, points)
    assert prediction_weight(model, 1 / 3) == pytest.approx(1 / 3)
    # readings that no line through the table fits: 30-60 % off in turn
    calibrate(model, [(s, y * f) for (s, y), f in zip(points, (1.6, 0.7, 1.5, 0.6))])
    assert prediction_weight(model, 1 / 3) == 0.0


def test_the_refit_and_the_error_figures_use_the_reading_not_the_estimate(prepared):
    import optuna
    from optuna.trial import create_trial

    from autoprune.runtime.latency_model import calibrate
    from autoprune.store.records import timed_against_predicted
    from autoprune.study.latency import recalibrated

    model = mac_proportional_model(prepared)
    dims = [dim.name for dim in prepared.dimensions]
    table = [model.relative_features({name: r for name in dims})[0] for r in (0.2, 0.4, 0.6)]
    calibrate(model, [({name: r for name in dims}, 0.05 + 0.95 * t)
                      for r, t in zip((0.2, 0.4, 0.6), table)])
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    for k in range(8):
        s = {name: 0.1 + 0.1 * k for name in dims}
        reading = 1 / (0.3 + 0.7 * model.relative_features(s)[0])  # the machine drifted
        study.add_trial(create_trial(values=[0.9, 20.0 / 2.0, 1.0], user_attrs={
            "config": {"sparsity": s, "precision": "fp32"}, "latency_source": "paired",
            "speedup": 2.0, "paired_latency": {"speedup": reading},  # estimate 2x, read
            "measurement": {"latency_ms": 10.0}, "predicted_latency_ms": 9.0}))
    s = {name: 0.45 for name in dims}
    assert recalibrated(model, study).relative(s) == pytest.approx(
        0.3 + 0.7 * model.relative_features(s)[0], rel=0.03)
    first = study.trials[0]
    reading = first.user_attrs["paired_latency"]["speedup"]
    # latency 10 ms at the 2x estimate: the reading's latency is 10 x 2 / reading
    assert timed_against_predicted([first]) == [(0, 9.0, pytest.approx(20.0 / reading))]


def test_a_promotion_carrying_its_member_s_reading_is_counted_once():
    import optuna
    from optuna.trial import create_trial

    from autoprune.store.records import timed_against_predicted

    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])

    def add(**facts):
        study.add_trial(create_trial(values=[0.9, 10.0, 1.0], user_attrs={
            "config": {"sparsity": {}, "precision": "fp32"}, "predicted_latency_ms": 9.0,
            "measurement": {"latency_ms": 10.0}, "speedup": 2.0, **facts}))

    add(latency_source="paired")                         # 0: timed
    add(latency_source="predicted: dominated")           # 1: left at its prediction
    add(latency_source="paired", continues=0)            # 2: carries trial 0's reading
    add(latency_source="paired", continues=1)            # 3: its member untimed: timed itself
    assert [n for n, _, _ in timed_against_predicted(study.get_trials())] == [0, 3]
