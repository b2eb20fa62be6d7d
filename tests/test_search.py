"""End-to-end searches of a tiny model: what a user of `autoprune.search` relies on."""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from optuna.trial import TrialState
from tiny_models import QUICK, TinyResNet, tiny_data

import autoprune
import autoprune.study.prepared
import autoprune.study.trial
from autoprune.errors import InvalidInputError
from autoprune.runtime.evaluate import evaluate
from autoprune.study.space import SEARCH_SPACES_DIR, load_search_space


def test_search_returns_a_front_of_pruned_fine_tuned_models(tiny_search):
    result = tiny_search(trials=5)
    assert result.pareto, "a search of five trials found no feasible model"
    latencies = [c.latency_ms for c in result.pareto]
    assert latencies == sorted(latencies)
    for candidate in result.pareto:
        assert candidate.params < result.baseline["params"]
        model = result.load(candidate)
        # The loaded weights are the fine-tuned ones: they score exactly what the trial recorded.
        assert evaluate(model, tiny_data()[1], "cpu") == candidate.accuracy


def test_unpruned_model_is_measured_before_any_trial(tiny_search):
    result = tiny_search()
    baseline = result.study.user_attrs["baseline"]
    assert baseline["params"] == sum(p.numel() for p in TinyResNet().parameters())
    assert 0 <= baseline["accuracy"] <= 1 and baseline["latency_ms"] > 0


def test_uniform_pruning_trials_come_first(tiny_search):
    trials = tiny_search().study.trials
    references = [t.user_attrs.get("reference") for t in trials[:3]]
    assert references == ["uniform 0.2", "uniform 0.4", "uniform 0.6"]
    for trial, ratio in zip(trials[:3], (0.2, 0.4, 0.6)):
        assert set(trial.user_attrs["config"]["sparsity"].values()) == {ratio}


def test_warm_starts_follow_the_uniform_references(tiny_search):
    space = replace(load_search_space(SEARCH_SPACES_DIR / "default.yaml"),
                    warm_starts=({"stream": 0.0, "inner": 0.5},))
    study = tiny_search(trials=5, search_space=space).study
    warm = study.trials[3]
    assert warm.user_attrs["reference"] == "warm start: stream 0, inner 0.5"
    kinds = {d["name"]: d["kind"] for d in study.user_attrs["settings"]["dimensions"]}
    assert {"stream", "inner"} <= set(kinds.values())
    for name, ratio in warm.user_attrs["config"]["sparsity"].items():
        assert ratio == {"stream": 0.0, "inner": 0.5}.get(kinds[name], 0.0), name


def test_violated_hard_constraint_skips_fine_tuning(tiny_search, monkeypatch):
    def no_finetune(*args, **kwargs):
        raise AssertionError("fine-tuned a model that breaks a hard constraint")

    monkeypatch.setattr(autoprune.study.trial, "finetune", no_finetune)
    result = tiny_search(constraints={"params": 10})
    for trial in result.study.trials:
        assert trial.state == TrialState.COMPLETE
        assert "params over its limit" in trial.user_attrs["skipped_finetune"]
        assert trial.constraints["params"] > 0
    assert result.pareto == []


def test_satisfied_constraints_are_recorded_as_feasible(tiny_search):
    result = tiny_search(constraints={"params": 1e9, "max_accuracy_drop": 1.0,
                                      "min_accuracy": 0})
    for trial in result.study.trials:
        assert all(value <= 0 for value in trial.constraints.values())
        assert set(trial.constraints) == {"params", "max_accuracy_drop"}  # floor 0: none


def test_a_timed_trials_latency_limit_is_judged_on_its_measured_latency(tiny_search):
    """The prediction is recorded first; timing must replace it (Optuna keeps the first value
    of a constraint set twice, so a trial sets its hard limits once, when they are final)."""
    limit = 1e6
    result = tiny_search(trials=5, constraints={"latency_ms": limit})
    timed = [t for t in result.study.trials if t.user_attrs.get("latency_source") == "paired"]
    assert timed
    for trial in timed:
        measured = trial.user_attrs["measurement"]["latency_ms"]
        assert measured != trial.user_attrs["predicted_latency_ms"]
        assert trial.constraints["latency_ms"] == pytest.approx(measured - limit, abs=1e-9)


def test_models_below_the_accuracy_floor_are_not_offered(tiny_search):
    """The default floor is half way from chance to the unpruned model; a model under it
    (the README demo once offered one at 10 %, chance) is recorded but not on the front."""
    result = tiny_search(trials=5, options=replace(QUICK, front_floor_share=0.5))
    floor = result.study.user_attrs["settings"]["accuracy_floor"]
    chance = 1 / 4  # tiny_data has four classes
    assert floor == pytest.approx(chance + 0.5 * max(0, result.baseline["accuracy"] - chance))
    for trial in result.study.trials:
        accuracy = trial.values[0]
        assert trial.constraints["min_accuracy"] == pytest.approx(floor - accuracy)
    assert all(c.accuracy >= floor for c in result.pareto)
    # A floor above everything empties the front; the trials are all still there.
    high = tiny_search(trials=3, study_name="high", constraints={"min_accuracy": 1.0})
    assert high.pareto == [] and len(high.study.trials) == 3


def test_nan_loss_fails_that_trial_only(tiny_search):
    calls = {"n": 0}

    def sometimes_nan(logits, targets):
        calls["n"] += 1
        loss = F.cross_entropy(logits, targets)
        # calls 1 and 2 are the pre-flight's: the validation batch, then a training batch
        return loss * float("nan") if calls["n"] == 3 else loss

    result = tiny_search(loss=sometimes_nan)
    states = [t.state for t in result.study.trials]
    assert states.count(TrialState.FAIL) == 1
    assert states.count(TrialState.COMPLETE) == 4  # trials=4 counts completed trials
    failed = next(t for t in result.study.trials if t.state == TrialState.FAIL)
    assert "loss became nan" in failed.user_attrs["failure"]


OUT_OF_MEMORY_SEARCH = """
import json, sys, weakref
import torch, torch.nn.functional as F
sys.path.insert(0, {tests!r})
import autoprune
from tiny_models import QUICK, TinyResNet, tiny_data

failed_outputs = []  # weak references to the logits of the steps that ran out of memory
alive_later = []  # whether each of them was still alive when a later trial trained

training_calls = []

def runs_out_of_memory_three_times(logits, targets):
    if logits.requires_grad:  # training, not the input check on the validation batch
        training_calls.append(1)
    if logits.requires_grad and len(training_calls) > 1:  # trials, not the pre-flight's
        alive_later.extend(ref() is not None for ref in failed_outputs)
        if len(failed_outputs) < 3:
            failed_outputs.append(weakref.ref(logits))  # it holds the trial's whole graph
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    return F.cross_entropy(logits, targets)

train, val = tiny_data()
result = autoprune.search(TinyResNet(), trials=3, finetune_steps=3, train=train, val=val,
                          loss=runs_out_of_memory_three_times, output_dir={out!r},
                          study_name="s", threads=1, write_report=False, verbose=False,
                          options=QUICK)
print(json.dumps({{"alive_later": alive_later, "trials": [
    [t.state.name, t.user_attrs.get("failure")] for t in result.study.trials]}}))
"""


def test_out_of_memory_fails_that_trial_and_frees_its_tensors_before_the_next(tmp_path):
    # In a process of its own: pytest keeps every log record, and Optuna logs a failed trial
    # with its traceback, which would keep the trial's frames alive where a user's console
    # handler does not.
    script = OUT_OF_MEMORY_SEARCH.format(tests=str(Path(__file__).parent), out=str(tmp_path))
    run_ = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert run_.returncode == 0, run_.stderr[-3000:]
    outcome = json.loads(run_.stdout.splitlines()[-1])
    failed = [reason for state, reason in outcome["trials"] if state == "FAIL"]
    assert failed == ["OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"] * 3
    assert [state for state, _ in outcome["trials"]].count("COMPLETE") == 3
    assert outcome["alive_later"] and not any(outcome["alive_later"])


def test_exception_inside_a_trial_fails_that_trial_only(tiny_search, monkeypatch):
    real = autoprune.study.prepared.prune_copy
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        # call 1 is the pre-flight check, then the latency model's calibration copies: this
        # is the second trial
        if calls["n"] == 3 + QUICK.calibration_points:
            raise RuntimeError("cannot prune this layer")
        return real(*args, **kwargs)

    monkeypatch.setattr(autoprune.study.prepared, "prune_copy", flaky)
    result = tiny_search()
    failed = [t for t in result.study.trials if t.state == TrialState.FAIL]
    assert [t.user_attrs["failure"] for t in failed] == ["RuntimeError: cannot prune this layer"]
    assert [t.state for t in result.study.trials].count(TrialState.COMPLETE) == 4


def test_same_study_name_resumes_to_the_requested_total(tiny_search):
    model = TinyResNet()
    first = tiny_search(model=model, trials=3)
    numbers = [t.number for t in first.study.trials]
    second = tiny_search(model=model, trials=5)
    assert [t.number for t in second.study.trials] == numbers + [3, 4]
    assert second.study.user_attrs["baseline"] == first.study.user_attrs["baseline"]


class Broken(torch.nn.Module):
    def forward(self, x):
        raise RuntimeError("shape mismatch in my layer")


@pytest.mark.parametrize("kwargs, message", [
    (dict(budget="soon", trials=None), "cannot parse budget"),
    (dict(constraints={"latency": 3}), "unknown constraint 'latency'"),
    (dict(constraints={"latency_ms": -1}), "must be positive"),
    (dict(device="cuda:0" if not torch.cuda.is_available() else "tpu"), "device"),
    (dict(model=Broken()), "forward pass fails on the first validation batch"),
    (dict(loaders=(tiny_data()[0], [])), "`val` is empty"),
    (dict(loaders=([], tiny_data()[1])), "`train` is empty"),
    (dict(loaders=(tiny_data()[0], [torch.zeros(2, 3, 8, 8)])), "(inputs, targets) pairs"),
    (dict(model="resnet18"), "must be a torch.nn.Module"),
])
def test_bad_input_fails_before_any_work(tmp_path, kwargs, message, tiny_search):
    with pytest.raises(InvalidInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tiny_search(**kwargs)
    assert not (tmp_path / "s").exists(), "bad input must be refused before anything is written"


def stored_checkpoints(tmp_path) -> int:
    """Checkpoints in the artifact store: two files (weights, architecture) each."""
    return len(list((tmp_path / "s" / "artifacts").iterdir())) // 2


def test_only_front_checkpoints_are_kept_by_default(tmp_path, tiny_search):
    result = tiny_search(trials=6)
    assert stored_checkpoints(tmp_path) == len(result.pareto)
    for candidate in result.pareto:
        result.load(candidate)
    dropped = [t for t in result.study.trials if t.number not in {c.trial for c in result.pareto}]
    assert dropped, f"all {len(result.study.trials)} trials are on the front"
    with pytest.raises(autoprune.CheckpointError, match="fell off the front"):
        result.load(dropped[0].number)


def test_keep_all_checkpoints_on_request(tmp_path, tiny_search):
    result = tiny_search(keep_checkpoints="all")
    assert stored_checkpoints(tmp_path) == len(result.study.trials)


def test_a_front_member_whose_checkpoint_another_worker_deleted_is_not_re_timed(tiny_search):
    """With several workers, another one's newer trial can push a member off the front (and
    delete its checkpoint) while this one finishes: finishing goes on without it."""
    from autoprune.errors import CheckpointError
    from autoprune.study.runner import _loadable_front

    result = tiny_search(trials=4)
    gone = result.pareto[0].trial
    load = result.load

    def load_or_gone(trial):
        if trial == gone:
            raise CheckpointError(f"trial {trial}'s checkpoint is not in the artifact store")
        return load(trial)

    result.load = load_or_gone
    assert set(_loadable_front(result, torch.device("cpu"))) == {str(c.trial) for c in result.pareto[1:]}


def test_a_search_runs_with_optunas_gaussian_process_sampler(tiny_search):
    """The benchmark's autoprune-gp method: after the references, the GP sampler proposes
    trials over autoprune's mixed space (levels, shifts, criterion, distillation)."""
    import optuna

    sampler = optuna.samplers.GPSampler(seed=0, n_startup_trials=3)
    result = tiny_search(trials=6, sampler=sampler)
    done = [t for t in result.study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 6 and result.pareto
    proposed = [t for t in done if "fixed_params" not in t.system_attrs]
    assert proposed and all("criterion" in t.params for t in proposed)
