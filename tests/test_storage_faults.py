"""Faults of the places a study keeps its files: a full disk while a checkpoint is written, an
artifact store that lost a front member's files, a database server restarted under workers."""

import os
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from tiny_models import QUICK, TinyResNet, tiny_data

import autoprune
from autoprune.errors import CheckpointError
from autoprune.store.records import TrialRecord


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (root only: skipped elsewhere)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def _fill(folder: Path, leave: int) -> Path:
    """A file taking all of the disk but `leave` bytes."""
    stat = os.statvfs(folder)
    filler = folder / "filler"
    filler.write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - leave))
    return filler


def test_a_full_disk_fails_the_trial_leaves_nothing_half_written_and_the_study_goes_on(
        tmp_path, small_disk):
    artifacts = small_disk / "artifacts"
    artifacts.mkdir()
    filler = _fill(small_disk, leave=16 * 1024)  # less than one checkpoint's weights (~40 KB)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.storages.RDBStorage(storage)  # the schema made before two threads read it

    def free_after_first_failure():  # the user makes room; the study must still be going
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                trials = optuna.load_study(study_name="disk", storage=storage).trials
            except KeyError:
                trials = []
            if any(t.state == TrialState.FAIL for t in trials):
                filler.unlink()
                return
            time.sleep(0.1)

    freeing = threading.Thread(target=free_after_first_failure)
    freeing.start()
    train, val = tiny_data()
    result = autoprune.search(TinyResNet(), trials=3, train=train, val=val, finetune_steps=2,
                              storage=storage, study_name="disk", artifacts=artifacts,
                              output_dir=tmp_path, keep_checkpoints="all", verbose=False,
                              write_report=False, threads=1, options=QUICK)
    freeing.join()
    trials = result.study.trials
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert failed and "No space left on device" in TrialRecord.of(failed[0]).failure
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3
    recorded = {artifact_id for t in trials
                for artifact_id in (TrialRecord.of(t).checkpoint_artifacts or {}).values()}
    assert {p.name for p in artifacts.iterdir()} == recorded  # no partial, no orphan
    for candidate in result.pareto:
        result.load(candidate)


def test_lost_artifact_files_are_named_on_load_and_the_report_still_builds(tmp_path):
    train, val = tiny_data()
    result = autoprune.search(TinyResNet(), trials=3, train=train, val=val, finetune_steps=2,
                              study_name="lost", output_dir=tmp_path, verbose=False,
                              write_report=False, threads=1, options=QUICK)
    lost = result.pareto[0].trial
    for artifact_id in TrialRecord.of(result.study.trials[lost]).checkpoint_artifacts.values():
        (tmp_path / "lost" / "artifacts" / artifact_id).unlink()
    shutil.rmtree(tmp_path / "lost" / "trials", ignore_errors=True)  # nothing cached either
    message = f"trial {lost}'s checkpoint is not in the artifact store"
    with pytest.raises(CheckpointError, match=message):
        result.load(lost)
    with pytest.raises(CheckpointError, match=message):
        result.export(lost, tmp_path / "model.onnx", format="onnx")
    report = result.report(tmp_path / "report.html")
    assert f"trial {lost}" in report.read_text().lower() or report.stat().st_size > 10_000
