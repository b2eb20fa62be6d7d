"""Early stopping of trials a faster trial already beats: the rule, the hook, a search."""

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import create_trial
from tiny_models import QUICK, TinyResNet, tiny_data

import autoprune
import autoprune.study.early_stop
from autoprune.runtime.evaluate import evaluate
from autoprune.runtime.finetune import Distillation, finetune
from autoprune.study.early_stop import judge, screen_step


def study_with(*finished):
    """A study holding finished trials given as (latency_ms, screen accuracy)."""
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    for latency, screened in finished:
        study.add_trial(create_trial(values=[screened, latency, 1.0], params={"x": 0.5},
                                     distributions={"x": FloatDistribution(0, 1)},
                                     user_attrs={"screen_accuracy": screened}))
    return study


def test_a_trial_stops_only_when_a_faster_trial_was_better_by_the_margin():
    study = study_with((5.0, 0.90), (20.0, 0.99))
    assert judge(study, 10.0, 0.85, margin=0.02).stop           # 5 ms trial: 0.90 > 0.85 + 0.02
    assert not judge(study, 10.0, 0.89, margin=0.02).stop       # within the margin
    assert not judge(study, 4.0, 0.50, margin=0.02).stop        # nothing finished is as fast
    verdict = judge(study, 30.0, 0.80, margin=0.02)             # both are faster: the best is named
    assert verdict.stop and "trial 1" in verdict.reason


def test_short_fine_tuning_is_not_screened():
    assert screen_step(8) is None
    assert screen_step(9) == 3 and screen_step(60) == 20


def test_finetune_stops_at_the_step_the_hook_says():
    train, _ = tiny_data()
    seen = []
    finetune(TinyResNet(), TinyResNet(), train, 10, 0.01, Distillation(), "cpu",
             on_step=lambda step: seen.append(step) or step == 4)
    assert seen == [1, 2, 3, 4]


def test_a_search_stops_hopeless_trials_and_records_why(tmp_path, monkeypatch):
    # Which real trials a faster one beats depends on the sampler and the machine's timings
    # (the rule itself is tested above), so every screened trial here meets a perfect rival:
    # all stop but the three uniform references, which are screened and fine-tuned to the end.
    monkeypatch.setattr(autoprune.study.early_stop, "faster_rivals",
                        lambda study, latency_ms: [(0, 0.0, 1.01)])
    train, val = tiny_data()
    result = autoprune.search(TinyResNet(), options=QUICK, trials=6, train=train, val=val, finetune_steps=9,
                              output_dir=tmp_path, study_name="s", verbose=False, threads=1,
                              early_stop_margin=0.02, seed=0)
    trials = result.study.trials
    assert all("screen_accuracy" in t.user_attrs for t in trials)
    stopped = [t for t in trials if t.user_attrs.get("stopped_early")]
    assert [t.number for t in stopped] == [3, 4, 5]
    assert all(t.user_attrs.get("reference") for t in trials[:3])
    for trial in stopped:
        assert trial.user_attrs["stopped_early"].startswith("after 3 of 9 fine-tuning steps: "
                                                            "trial 0 was as fast")
        assert trial.values[0] == trial.user_attrs["screen_accuracy"]
    assert result.pareto
    for candidate in result.pareto:  # a stopped trial loads with the weights it was scored on
        assert evaluate(result.load(candidate), val, "cpu") == candidate.accuracy
    assert "stopped early" in result.report_path.read_text()


def test_a_negative_margin_is_refused_before_any_work(tmp_path):
    train, val = tiny_data()
    with pytest.raises(autoprune.InvalidInputError, match="early_stop_margin"):
        autoprune.search(TinyResNet(), options=QUICK, trials=1, train=train, val=val, output_dir=tmp_path,
                         early_stop_margin=-0.1)
    assert not any(tmp_path.iterdir())
