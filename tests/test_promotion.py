"""Promotion (successive halving in time): the plan, who is promoted, the checkpoints a
queued promotion keeps, and a time-budgeted search that fine-tunes its front further."""

import io
from dataclasses import replace

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial
from tiny_models import QUICK, TinyResNet, tiny_data

import autoprune
from autoprune.results.report import report_data
from autoprune.store.records import TrialRecord
from autoprune.study.callbacks import CheckpointRetention
from autoprune.study.opening import requeue_interrupted
from autoprune.study.promotion import FILL, plan_promotions, promotable, promote_front


def finished(number_of_steps=10, finetune_seconds=1.0, rest=0.0, accuracy=0.9, latency=5.0,
             **attrs):
    return create_trial(values=[accuracy, latency, 1.0], params={"x": 0.5},
                        distributions={"x": FloatDistribution(0, 1)},
                        user_attrs={"seconds_finetune": finetune_seconds, "seconds_evaluate": rest,
                                    "finetuned_steps": number_of_steps,
                                    "checkpoint_artifacts": {"w": "id"}, **attrs})


def study_of(*trials):
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    for trial in trials:
        study.add_trial(trial)
    return study


def test_the_time_left_is_shared_equally_so_a_faster_model_gets_more_steps():
    fast = finished(finetune_seconds=0.1, rest=0.25)   # 10 ms a step
    slow = finished(finetune_seconds=0.2, rest=0.25)   # 20 ms a step
    plan = plan_promotions([fast, slow], seconds_left=10.0, min_steps=5)
    share = FILL * 10.0 / 2
    assert [p.steps for p in plan] == [int((share - 0.25) / 0.01), int((share - 0.25) / 0.02)]


def test_a_front_too_long_for_the_time_is_thinned_evenly_keeping_both_ends():
    members = [finished(finetune_seconds=0.1, latency=float(n)) for n in range(5)]  # 10 ms/step
    # 1 s left: 0.85 s fills 85 steps in all, so only members that get >= 40 steps each: two
    plan = plan_promotions(members, seconds_left=1.0, min_steps=40)
    assert [p.member for p in plan] == [members[0], members[4]]
    assert plan_promotions(members, seconds_left=0.1, min_steps=40) == []


def test_front_members_not_continued_yet_are_promoted_promotions_included():
    study = study_of(
        finished(accuracy=0.9, latency=5.0),                     # 0: front
        finished(accuracy=0.95, latency=7.0),                    # 1: front, continued by 2
        finished(accuracy=0.97, latency=8.0, continues=1, promoted_steps=30),  # 2: front
        finished(accuracy=0.5, latency=9.0),                     # 3: dominated
        finished(accuracy=0.99, latency=12.0, skipped_finetune="over a limit"))  # 4
    assert [t.number for t in promotable(study)] == [0, 2]


def test_a_screened_members_step_time_leaves_out_the_screens_evaluation():
    screened = finished(finetune_seconds=0.3, rest=0.1, screen_step=3)  # 0.2 s of training
    [plan] = plan_promotions([screened], seconds_left=10.0, min_steps=5)
    assert plan.steps == int((FILL * 10.0 - 0.1) / 0.02)


def test_promotions_are_enqueued_with_the_members_parameters():
    study = study_of(finished(accuracy=0.9, latency=5.0, finetune_seconds=0.1))
    plan = promote_front(study, seconds_left=10.0, min_steps=5)
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(plan) == len(waiting) == 1
    record = TrialRecord.of(waiting[0])
    assert waiting[0].system_attrs["fixed_params"] == study.trials[0].params
    assert record.continues == 0 and record.promoted_steps == plan[0].steps
    assert promote_front(study, seconds_left=10.0, min_steps=5) == []  # claimed now


def test_a_queued_promotion_keeps_the_checkpoint_it_continues(tmp_path):
    store = FileSystemArtifactStore(str(tmp_path))
    for artifact in ("a0", "a1"):
        store.write(artifact, io.BytesIO(b"weights"))
    study = study_of(finished(accuracy=0.8, latency=9.0, checkpoint_artifacts={"w": "a0"}),
                     finished(accuracy=0.9, latency=5.0, checkpoint_artifacts={"w": "a1"}))
    study.enqueue_trial({"x": 0.5}, user_attrs={"continues": 0, "promoted_steps": 10})
    CheckpointRetention(store, tmp_path / "cache")(study, study.trials[1])
    assert (tmp_path / "a0").exists()  # dominated by trial 1, but its promotion is queued

    study.tell(study.ask(), [0.85, 9.0, 1.0])  # the promotion ran
    CheckpointRetention(store, tmp_path / "cache")(study, study.trials[-1])
    assert not (tmp_path / "a0").exists() and (tmp_path / "a1").exists()


def test_a_time_budgeted_search_fine_tunes_its_front_further(tmp_path):
    train, val = tiny_data()
    result = autoprune.search(TinyResNet(), budget=12, train=train, val=val, finetune_steps=3,
                              output_dir=tmp_path, study_name="s", verbose=False, threads=1,
                              seed=0, options=replace(QUICK, promote_share=0.5))
    trials = result.study.trials
    # a round planned near the end may leave a promotion queued (it runs first on resume)
    promoted = [t for t in trials if TrialRecord.of(t).continues is not None
                and t.state != TrialState.WAITING]
    assert promoted, "no front member was promoted"
    for trial in promoted:
        record = TrialRecord.of(trial)
        member = trials[record.continues]
        known = TrialRecord.of(member)
        assert trial.state == TrialState.COMPLETE, record.failure
        assert trial.params == member.params
        assert record.promoted_steps >= 3
        assert record.finetuned_steps == known.finetuned_steps + record.promoted_steps
        assert trial.values[1] == member.values[1]  # the same architecture: its timing carries
        assert record.kept_channels == known.kept_channels
    for candidate in result.pareto:  # every front model, promoted or not, loads
        result.load(candidate.trial)
    rows = {row.number: row for row in report_data(result.study).rows}
    assert f"continues trial {TrialRecord.of(promoted[0]).continues}" in \
        rows[promoted[0].number].note


def test_a_trial_budget_or_a_zero_share_promotes_nothing(tmp_path):
    train, val = tiny_data()
    result = autoprune.search(TinyResNet(), trials=4, train=train, val=val, finetune_steps=3,
                              output_dir=tmp_path, study_name="s", verbose=False, threads=1,
                              seed=0, options=replace(QUICK, promote_share=0.5))
    assert not [t for t in result.study.trials if TrialRecord.of(t).continues is not None]


def test_a_promotion_cut_by_ctrl_c_is_enqueued_again_as_the_same_promotion():
    study = study_of(finished())
    study.enqueue_trial({"x": 0.5}, user_attrs={"continues": 0, "promoted_steps": 40})
    cut = study.ask()
    study.tell(cut, state=TrialState.FAIL)
    requeue_interrupted(study, [cut.number])
    again = TrialRecord.of(study.get_trials(states=(TrialState.WAITING,))[0])
    assert (again.retry_of, again.continues, again.promoted_steps) == (cut.number, 0, 40)
