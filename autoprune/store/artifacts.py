"""Trial checkpoints in Optuna's artifact store, so any worker can load any trial.

A trial writes its checkpoint (see `checkpoint.py`) to a temporary directory and uploads the
two files; their artifact ids are recorded on the trial (`TrialRecord.checkpoint_artifacts`).
Loading downloads them into a local cache directory once.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import optuna
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import FrozenTrial

from ..errors import CheckpointError
from .checkpoint import ARCHITECTURE_FILE, WEIGHTS_FILE
from .records import TrialRecord, record_trial

FILES = (WEIGHTS_FILE, ARCHITECTURE_FILE)


def upload_checkpoint(trial: optuna.Trial, directory: Path, store) -> dict[str, str]:
    """Upload a checkpoint directory's files and record their ids on `trial`."""
    ids = {name: optuna.artifacts.upload_artifact(artifact_store=store, study_or_trial=trial,
                                                  file_path=str(directory / name))
           for name in FILES}
    record_trial(trial, checkpoint_artifacts=ids)
    return ids


def local_checkpoint(trial: FrozenTrial, store, cache_dir: Path) -> Path:
    """The trial's checkpoint directory on this machine, downloaded first if needed."""
    local = cache_dir / f"trial-{trial.number:05d}"
    if (local / ARCHITECTURE_FILE).is_file():
        return local
    ids = TrialRecord.of(trial).checkpoint_artifacts
    if not ids:
        raise CheckpointError(f"trial {trial.number} has no checkpoint: it was not fine-tuned, "
                              "or it fell off the front and its weights were deleted (search with "
                              "keep_checkpoints='all' to keep every trial's)")
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".trial-{trial.number:05d}."))
    try:
        for name, artifact_id in ids.items():
            optuna.artifacts.download_artifact(artifact_store=store, artifact_id=artifact_id,
                                               file_path=str(staging / name))
    except ArtifactNotFound:
        shutil.rmtree(staging, ignore_errors=True)
        raise CheckpointError(f"trial {trial.number}'s checkpoint is not in the artifact store: "
                              "it fell off the front and was deleted (search with "
                              "keep_checkpoints='all' to keep every trial's), or this is not the "
                              "store the search wrote to") from None
    except Exception as err:  # an unreachable or broken store
        shutil.rmtree(staging, ignore_errors=True)
        raise CheckpointError(f"cannot fetch trial {trial.number}'s checkpoint from the "
                              f"artifact store: {type(err).__name__}: {err}") from err
    if local.exists():
        shutil.rmtree(local)
    staging.rename(local)
    return local


def remove_checkpoint(trial: FrozenTrial, store, cache_dir: Path) -> None:
    """Delete a trial's checkpoint from the store and the local cache (missing is fine)."""
    for artifact_id in (TrialRecord.of(trial).checkpoint_artifacts or {}).values():
        try:
            store.remove(artifact_id)
        except ArtifactNotFound:  # another worker removed it first
            pass
    shutil.rmtree(cache_dir / f"trial-{trial.number:05d}", ignore_errors=True)
