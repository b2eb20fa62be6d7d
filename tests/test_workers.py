"""Fault injection on real storages: killed workers, resumes, four workers on PostgreSQL.

The worker-process tests are marked slow (a minute or two; CI runs them). PostgreSQL tests
run when AUTOPRUNE_TEST_POSTGRES holds a database URL (.ci/run starts a local server and
sets it); SQLite tests always run.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from tiny_models import QUICK, TinyResNet, tiny_data

import autoprune
from autoprune.errors import InvalidInputError

WORKER = str(Path(__file__).parent / "worker.py")
POSTGRES = os.environ.get("AUTOPRUNE_TEST_POSTGRES")
needs_postgres = pytest.mark.skipif(not POSTGRES, reason="set AUTOPRUNE_TEST_POSTGRES to a "
                                                          "PostgreSQL URL (.ci/run does)")


def storage_url(kind: str, tmp_path: Path) -> str:
    return POSTGRES if kind == "postgres" else f"sqlite:///{tmp_path / 'study.db'}"


def start_worker(url: str, study: str, trials: int, out: Path, **env_vars) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(WORKER).parent), **env_vars}
    return subprocess.Popen([sys.executable, WORKER, url, study, str(trials), str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def trials_of(url: str, study: str):
    return optuna.load_study(study_name=study, storage=url).get_trials()


def wait_for_trial_in_flight(url: str, study: str, worker: subprocess.Popen, timeout=120):
    """Wait until one trial is complete and another is running with all its parameters drawn.

    Waiting for the last parameter ("lr") keeps a kill from landing between two suggestions,
    where the retry would rightly draw the missing ones afresh and differ from the original.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert worker.poll() is None, f"worker ended early: {worker.stderr.read()[-2000:]}"
        try:
            trials = trials_of(url, study)
        except KeyError:  # the study is not created yet
            trials = []
        states = [t.state for t in trials]
        if (TrialState.COMPLETE in states and states[-1] == TrialState.RUNNING
                and "lr" in trials[-1].params):
            return
        time.sleep(0.2)
    raise AssertionError("no trial was in flight in time")


def finish(worker: subprocess.Popen, timeout=300) -> None:
    _, stderr = worker.communicate(timeout=timeout)
    assert worker.returncode == 0, stderr[-3000:]


def finished_study(workers: list[subprocess.Popen], study: str, completed: int):
    """The study's trials once every worker ended well: `completed` complete, none left running."""
    for worker in workers:
        finish(worker, timeout=600)
    trials = trials_of(POSTGRES, study)
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) == completed
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    return trials, states


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=needs_postgres)])
def test_killed_worker_trial_is_rerun_with_same_parameters_and_total_is_exact(tmp_path, kind):
    url, study = storage_url(kind, tmp_path), f"kill-{uuid.uuid4().hex[:8]}"
    first = start_worker(url, study, 4, tmp_path)
    wait_for_trial_in_flight(url, study, first)
    first.send_signal(signal.SIGKILL)
    first.wait()
    before = trials_of(url, study)
    killed = before[-1]
    assert killed.state == TrialState.RUNNING
    done_before = {t.number: (t.params, t.values) for t in before if t.state == TrialState.COMPLETE}
    time.sleep(3.5)  # past the heartbeat grace period: the killed trial is stale

    finish(start_worker(url, study, 4, tmp_path))  # the next worker resumes the study

    after = trials_of(url, study)
    states = [t.state for t in after]
    assert states.count(TrialState.COMPLETE) == 4
    assert TrialState.RUNNING not in states
    assert after[killed.number].state == TrialState.FAIL
    retries = [t for t in after if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1 and retries[0].params == killed.params
    assert retries[0].state == TrialState.COMPLETE
    for number, (params, values) in done_before.items():  # earlier results are unchanged
        assert (after[number].params, after[number].values) == (params, values)


@pytest.mark.slow
def test_ctrl_c_marks_the_trial_interrupted_writes_the_report_and_says_how_to_resume(tmp_path):
    url, study = storage_url("sqlite", tmp_path), "interrupted"
    # more trials than it can finish before the signal: the test is about the interruption
    worker = start_worker(url, study, 50, tmp_path, WRITE_REPORT="1")
    wait_for_trial_in_flight(url, study, worker)
    worker.send_signal(signal.SIGINT)
    _, stderr = worker.communicate(timeout=120)
    assert "to resume, run the same command again" in stderr, (
        f"exit code {worker.returncode}; stderr:\n{stderr[-3000:]}")
    trials = trials_of(url, study)
    cut = [t for t in trials if t.state == TrialState.FAIL]
    assert len(cut) == 1 and cut[0].user_attrs["failure"].startswith("interrupted")
    again = [t for t in trials if t.user_attrs.get("retry_of") == cut[0].number]
    assert len(again) == 1 and again[0].state == TrialState.WAITING
    assert again[0].system_attrs["fixed_params"] == cut[0].params
    assert (tmp_path / study / "report.html").is_file()


@pytest.mark.slow
@needs_postgres
def test_four_workers_share_one_postgres_study(tmp_path):
    study = f"four-{uuid.uuid4().hex[:8]}"
    # no trial is cut short here: short trials, so the four share the study for less time
    workers = [start_worker(POSTGRES, study, 6, tmp_path, FINETUNE_STEPS="30") for _ in range(4)]
    trials, _ = finished_study(workers, study, 6)
    assert sorted(t.number for t in trials) == list(range(len(trials)))  # unique, none lost
    references = [t.user_attrs["reference"] for t in trials if "reference" in t.user_attrs]
    assert references == ["uniform 0.2", "uniform 0.4", "uniform 0.6"]  # enqueued once
    for trial in trials:  # every trial that did not complete says why
        if trial.state == TrialState.PRUNED:
            assert "surplus" in trial.user_attrs
        elif trial.state == TrialState.FAIL:
            assert trial.user_attrs.get("failure")


def restart_postgres() -> None:
    version = sorted(os.listdir("/etc/postgresql"), key=float)[-1]
    subprocess.run(["pg_ctlcluster", version, "main", "restart"], check=True, timeout=120)


@pytest.mark.slow
@needs_postgres
def test_a_postgres_restart_under_two_workers_fails_at_most_the_trials_in_flight(tmp_path):
    if not shutil.which("pg_ctlcluster"):
        pytest.skip("pg_ctlcluster is not here to restart the server")
    study = f"restart-{uuid.uuid4().hex[:8]}"
    workers = [start_worker(POSTGRES, study, 3, tmp_path, FINETUNE_STEPS="40")
               for _ in range(2)]
    wait_for_trial_in_flight(POSTGRES, study, workers[0])
    restart_postgres()
    trials, states = finished_study(workers, study, 3)
    assert states.count(TrialState.FAIL) <= 2  # at most the two in flight
    for trial in trials:
        if trial.state == TrialState.FAIL:  # its reason, or its retry
            assert (trial.user_attrs.get("failure")
                    or any(t.system_attrs.get("failed_trial") == trial.number for t in trials))


def run(tmp_path, model, **kwargs):
    train, val = tiny_data()
    return autoprune.search(model, options=QUICK, trials=2, train=train, val=val, finetune_steps=2,
                            output_dir=tmp_path, study_name="shared", verbose=False,
                            write_report=False, threads=1, **kwargs)


def test_a_search_for_another_model_is_refused_and_loses_nothing(tmp_path):
    run(tmp_path, TinyResNet())
    storage = f"sqlite:///{tmp_path / 'shared' / 'study.db'}"
    before = len(trials_of(storage, "shared"))
    with pytest.raises(InvalidInputError, match="started by a different search: its "
                                                "weights_sha256 differ"):
        run(tmp_path, TinyResNet(width=4))
    with pytest.raises(InvalidInputError, match="weights_sha256 differ"):
        run(tmp_path, TinyResNet())  # same architecture, other weights
    assert len(trials_of(storage, "shared")) == before


def test_a_search_with_another_search_space_is_refused(tmp_path):
    import torch

    torch.manual_seed(0)
    model = TinyResNet()
    run(tmp_path, model)
    spaces = Path(autoprune.study.space.SEARCH_SPACES_DIR)
    with pytest.raises(InvalidInputError, match="search_space"):
        run(tmp_path, model, search_space=spaces / "mobilenetv3.yaml")
