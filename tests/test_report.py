"""The report's data, computed without a browser; and its size for a long study."""

import datetime
import random

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from autoprune.results.pareto import hypervolume
from autoprune.results.report import render_report, report_data


def synthetic_study(n: int, layers: int = 40, predict=None) -> optuna.Study:
    """A finished study of `n` trials shaped like autoprune's, with no model behind it."""
    rng = random.Random(0)
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    names = [f"layer{i}.conv" for i in range(layers)]
    study.set_user_attr("baseline", {"accuracy": 0.99, "latency_ms": 40.0, "memory_mb": 45.0,
                                     "params": 11_000_000, "macs": 37_000_000})
    study.set_user_attr("base_channels", {name: 256 for name in names})
    study.set_user_attr("settings", {"constraints": {"latency_ms": 20.0}})
    start = datetime.datetime(2026, 11, 23, 20, 0)
    for number in range(n):
        sparsity = rng.uniform(0, 0.9)
        latency = 40 * (1 - sparsity) + rng.uniform(0, 3)
        accuracy = 0.99 - sparsity ** 3 * 0.3 - rng.uniform(0, 0.02)
        memory = 45 * (1 - sparsity) ** 2 + 1
        state = TrialState.FAIL if number % 97 == 5 else TrialState.COMPLETE
        attrs = {"config": {}, "kept_channels": {name: int(256 * (1 - sparsity)) for name in names},
                 "measurement": {"latency_ms": latency, "memory_mb": memory, "params": 1000,
                                 "macs": 1000}, "speedup": 40 / latency}
        if state == TrialState.FAIL:
            attrs["failure"] = "RuntimeError: out of memory"
        elif predict is not None:
            attrs["predicted_latency_ms"] = predict(number, latency)
            attrs["latency_source"] = "paired" if number % 5 else "predicted"
        study.add_trial(FrozenTrial(
            number=number, trial_id=number, state=state, value=None, intermediate_values={},
            values=[accuracy, latency, memory] if state == TrialState.COMPLETE else None,
            params={"sparsity:all": sparsity, "criterion": rng.choice(["l1", "l2"])},
            distributions={"sparsity:all": FloatDistribution(0, 0.9),
                           "criterion": CategoricalDistribution(["l1", "l2"])},
            user_attrs=attrs, system_attrs={"constraints:latency_ms": latency - 20.0},
            datetime_start=start + datetime.timedelta(seconds=6 * number),
            datetime_complete=start + datetime.timedelta(seconds=6 * number + 5)))
    return study


def test_statuses_separate_front_dominated_infeasible_and_failed():
    data = report_data(synthetic_study(60))
    statuses = {r.status for r in data.rows}
    assert statuses == {"front", "dominated", "infeasible", "failed"}
    for row in data.rows:
        if row.status == "infeasible":
            assert row.latency_ms > 20.0
    failed = [r for r in data.rows if r.status == "failed"]
    assert all(r.note == "RuntimeError: out of memory" for r in failed)


def test_hypervolume_never_decreases_as_trials_finish():
    values = [v for _, _, v in report_data(synthetic_study(60)).hypervolume]
    assert values == sorted(values) and values[-1] > 0


def test_hypervolume_of_a_point_is_its_box_in_normalised_coordinates():
    assert hypervolume([(0.5, 20.0, 45.0 / 2)], 40.0, 45.0) == pytest.approx(0.5 * 0.5 * 0.5)
    assert hypervolume([(0.9, 50.0, 10.0)], 40.0, 45.0) == 0.0  # slower than the unpruned model


def test_importance_is_computed_for_each_objective():
    importance = report_data(synthetic_study(60)).importance
    assert set(importance) == {"accuracy", "latency_ms", "memory_mb"}
    assert importance["latency_ms"]["sparsity:all"] > importance["latency_ms"]["criterion"]


def test_report_of_2000_trials_stays_small():
    page = render_report(report_data(synthetic_study(2000)))
    assert len(page.encode()) < 12_000_000


def test_front_matches_the_definition_of_dominance():
    from autoprune.results.pareto import front_trials, is_feasible

    study = synthetic_study(300)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE and is_feasible(t)]

    def dominates(a, b):
        no_worse = a[0] >= b[0] and a[1] <= b[1] and a[2] <= b[2]
        return no_worse and (a[0] > b[0] or a[1] < b[1] or a[2] < b[2])

    expected = {t.number for t in done if not any(dominates(o.values, t.values) for o in done)}
    assert {t.number for t in front_trials(study)} == expected


def test_a_model_with_the_same_figures_as_a_later_trial_is_listed_once():
    """A promotion that leaves its member's score unchanged has the member's exact figures:
    the front lists the model once, as the later (longer fine-tuned) trial."""
    from autoprune.results.pareto import FrontTracker, front_trials

    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    for values in [(0.99, 10.0, 5.0), (0.95, 4.0, 3.0), (0.99, 10.0, 5.0), (0.95, 4.0, 3.0)]:
        study.add_trial(optuna.trial.create_trial(values=list(values)))
    tracker = FrontTracker()
    tracker.update(study)
    study.add_trial(optuna.trial.create_trial(values=[0.99, 10.0, 5.0]))
    assert [t.number for t in front_trials(study)] == [3, 4]
    assert [t.number for t in tracker.update(study)] == [3, 4]


def test_settings_are_a_readable_table_not_a_json_dump():
    study = synthetic_study(5)
    study.set_user_attr("settings", {
        "model": "resnet18", "device": "cpu", "constraints": {"latency_ms": 20.0},
        "versions": {"torch": "2.14.1", "optuna": "5.0.0"},
        "dimensions": [{"name": "layer1.inner", "kind": "inner", "layers": ["layer1.0.conv1"],
                        "channels": 64}]})
    page = render_report(report_data(study))
    settings = page.split("<h2>Settings</h2>", 1)[1]
    assert "<th>model</th><td>resnet18</td>" in settings
    assert "<th>constraints</th><td>latency_ms 20</td>" in settings
    assert "<h3>versions</h3>" in settings and "<th>torch</th><td>2.14.1</td>" in settings
    assert "<td>layer1.inner</td><td>inner</td><td>64</td><td>layer1.0.conv1</td>" in settings
    assert '"versions"' not in settings.split("<script", 1)[0]


def test_the_incremental_front_equals_the_front_recomputed_after_every_trial():
    from autoprune.results.pareto import FrontTracker, front_trials

    finished = synthetic_study(300).trials
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    tracker = FrontTracker()
    for trial in finished:
        study.add_trial(trial)
        assert [t.number for t in tracker.update(study)] == [t.number for t in front_trials(study)]


def test_the_report_sets_predicted_latency_against_measured_with_its_error():
    # every other prediction 5 % off, the rest 30 % off
    study = synthetic_study(40, predict=lambda number, measured:
                            measured * (1.05 if number % 2 else 1.3))
    study.set_user_attr("latency_model", {"layers": [{}] * 21, "build_seconds": 12.5,
                                          "calibration": [{}] * 8,
                                          "coefficients": [0.1, 0.8, 0.1]})
    data = report_data(study)
    timed = [t for t in study.get_trials(states=(TrialState.COMPLETE,)) if t.number % 5]
    assert [pair[0] for pair in data.latency_pairs] == [t.number for t in timed]
    assert data.latency_errors["median_abs_error"] == pytest.approx(0.175, abs=0.126)
    assert 0.4 < data.latency_errors["within_10pct"] < 0.6
    page = render_report(data)
    assert 'id="latency-prediction"' in page and "predicted before pruning" in page
    assert "21 layers tabled and 8 pruned copies timed in 12.5 s" in page


def test_after_the_final_re_timing_every_trial_is_drawn_on_its_scale():
    """The machine ran 1.5x slower at the end: front members are re-timed, and the other
    trials' latencies follow through their paired speedups, so none is drawn faster than a
    front member that beats it."""
    study = synthetic_study(60)
    front = report_data(study).rows
    members = [r for r in front if r.status == "front"]
    final = {str(r.number): 1.5 * r.latency_ms for r in members}
    study.set_user_attr("final_latency_ms", {**final, "baseline": 60.0})
    rows = report_data(study).rows
    assert report_data(study).baseline["latency_ms"] == 60.0
    for row in rows:
        if row.speedup and row.status != "failed":
            assert row.latency_ms == pytest.approx(60.0 / row.speedup)
    timed = {r.number: r for r in rows}
    for member in members:
        assert timed[member.number].latency_ms == pytest.approx(1.5 * member.latency_ms)
