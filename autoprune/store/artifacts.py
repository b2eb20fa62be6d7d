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
from .checkpoint import (ARCHITECTURE_FILE, INT8_GRAPH_FILE, WEIGHTS_FILE, inputs_from_spec,
                         read_description, save_checkpoint)
from .records import StudyRecord, TrialRecord, record_study, record_trial

FILES = (WEIGHTS_FILE, ARCHITECTURE_FILE)


def upload_checkpoint(trial: optuna.Trial, directory: Path, store) -> dict[str, str]:
    """Upload a checkpoint directory's files and record their ids on `trial`."""
    names = FILES + ((INT8_GRAPH_FILE,) if (directory / INT8_GRAPH_FILE).is_file() else ())
    ids = {name: optuna.artifacts.upload_artifact(artifact_store=store, study_or_trial=trial,
                                                  file_path=str(directory / name))
           for name in names}
    record_trial(trial, checkpoint_artifacts=ids)
    return ids


def local_checkpoint(trial: FrozenTrial, store, cache_dir: Path) -> Path:
    """The trial's checkpoint directory on this machine, downloaded first if needed."""
    ids = TrialRecord.of(trial).checkpoint_artifacts
    if not ids:
        raise CheckpointError(f"trial {trial.number} has no checkpoint: it was not fine-tuned, "
                              "or it fell off the front and its weights were deleted (search with "
                              "keep_checkpoints='all' to keep every trial's)")
    return _downloaded(ids, store, cache_dir / f"trial-{trial.number:05d}",
                       f"trial {trial.number}'s checkpoint",
                       "it fell off the front and was deleted (search with "
                       "keep_checkpoints='all' to keep every trial's)")


def local_finetuned(number: int, ids: dict[str, str], store, cache_dir: Path) -> Path:
    """The directory of trial `number`'s full fine-tune (`store_finetuned`), downloaded first
    if needed; named by its weights' id, so a newer fine-tune is fetched anew."""
    return _downloaded(ids, store, cache_dir / f"trial-{number:05d}-full-{ids[WEIGHTS_FILE][:8]}",
                       f"trial {number}'s full fine-tune", "it was deleted")


def _downloaded(ids: dict[str, str], store, local: Path, what: str, gone: str) -> Path:
    if (local / ARCHITECTURE_FILE).is_file():
        return local
    local.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=local.parent, prefix=f".{local.name}."))
    try:
        for name, artifact_id in ids.items():
            optuna.artifacts.download_artifact(artifact_store=store, artifact_id=artifact_id,
                                               file_path=str(staging / name))
    except ArtifactNotFound:
        shutil.rmtree(staging, ignore_errors=True)
        raise CheckpointError(f"{what} is not in the artifact store: {gone}, or this is not "
                              "the store the search wrote to") from None
    except Exception as err:  # an unreachable or broken store
        shutil.rmtree(staging, ignore_errors=True)
        raise CheckpointError(f"cannot fetch {what} from the artifact store: "
                              f"{type(err).__name__}: {err}") from err
    if local.exists():
        shutil.rmtree(local)
    staging.rename(local)
    return local


def store_finetuned(study: optuna.Study, number: int, model, base_model, brief_directory: Path,
                    store, progress: dict, seconds: float) -> dict:
    """Save trial `number`'s full fine-tune as a checkpoint beside its brief one (kept) and
    record it on the study (`StudyRecord.finetuned`); an earlier full fine-tune is replaced."""
    description = read_description(brief_directory)
    with tempfile.TemporaryDirectory(prefix="autoprune-finetuned-") as staging:
        save_checkpoint(staging, model, base_model, description["pruning_history"],
                        inputs_from_spec(description["example_inputs"]),
                        extra={"trial": number, "config": description.get("config"),
                               "measurement": description.get("measurement"),
                               "accuracy": progress["best_metric"],
                               "full_finetune": {"epochs": progress["completed"],
                                                 "best_epoch": progress["best_epoch"]}})
        ids = {name: optuna.artifacts.upload_artifact(artifact_store=store, study_or_trial=study,
                                                      file_path=str(Path(staging) / name))
               for name in FILES}
    entry = {"artifacts": ids, "epochs": progress["completed"],
             "best_epoch": progress["best_epoch"], "accuracy": progress["best_metric"],
             "brief_accuracy": study.get_trials(deepcopy=False)[number].values[0],
             "history": progress["history"], "settings": progress["settings"],
             "seconds": seconds}
    finetuned = dict(StudyRecord.of(study).finetuned or {})
    earlier = finetuned.get(str(number))
    finetuned[str(number)] = entry
    record_study(study, finetuned=finetuned)
    for artifact_id in (earlier or {}).get("artifacts", {}).values():
        try:
            store.remove(artifact_id)
        except ArtifactNotFound:
            pass
    return entry


def remove_checkpoint(trial: FrozenTrial, store, cache_dir: Path) -> None:
    """Delete a trial's checkpoint from the store and the local cache (missing is fine)."""
    for artifact_id in (TrialRecord.of(trial).checkpoint_artifacts or {}).values():
        try:
            store.remove(artifact_id)
        except ArtifactNotFound:  # another worker removed it first
            pass
    shutil.rmtree(cache_dir / f"trial-{trial.number:05d}", ignore_errors=True)
