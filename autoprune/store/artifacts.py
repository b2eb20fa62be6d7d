"""Trial checkpoints in Optuna's artifact store, so any worker can load any trial.

A trial writes its checkpoint (see `checkpoint.py`) to a temporary directory and uploads the
files; their artifact ids and SHA-256 digests are recorded on the trial
(`TrialRecord.checkpoint_artifacts`, `checkpoint_sha256`). Loading downloads them into a local
cache folder named after the artifact ids (never after the trial number alone: another study
of the same name would have a trial of that number too), and every file is checked against the
recorded digests each time it is opened. A cached folder that does not match is replaced, and
a download that does not match is refused: what is loaded is what the study recorded.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from pathlib import Path

import optuna
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import FrozenTrial

from ..errors import CheckpointError
from .checkpoint import (ARCHITECTURE_FILE, INT8_GRAPH_FILE, WEIGHTS_FILE, file_sha256,
                         inputs_from_spec, read_description, save_checkpoint)
from .records import StudyRecord, TrialRecord, record_study, record_trial

FILES = (WEIGHTS_FILE, ARCHITECTURE_FILE)

logger = logging.getLogger(__name__)


def _remove_quietly(store, artifact_id: str) -> None:
    """Undo an upload while another error is on its way: a failure here is logged, and the
    original error goes on."""
    try:
        store.remove(artifact_id)
    except ArtifactNotFound:  # nothing was written: nothing to undo
        pass
    except Exception as err:  # the store is gone too: say what may be left behind
        logger.warning(f"autoprune: could not remove the partial artifact {artifact_id} "
                       f"({type(err).__name__}: {err}); it is not recorded on any trial")


class _RemovedOnFailure:
    """An artifact store whose failed writes leave nothing behind: a write cut short (a full
    disk, a dropped connection) removes the partial artifact before the error goes on."""

    def __init__(self, store):
        self.store = store

    def write(self, artifact_id: str, content_body) -> None:
        try:
            self.store.write(artifact_id, content_body)
        except BaseException:
            _remove_quietly(self.store, artifact_id)
            raise

    def open_reader(self, artifact_id: str):
        return self.store.open_reader(artifact_id)

    def remove(self, artifact_id: str) -> None:
        self.store.remove(artifact_id)


def _upload_all(study_or_trial, directory: Path, names: tuple[str, ...],
                store) -> dict[str, str]:
    """Upload `names` from `directory`; if one fails, the ones already uploaded are removed."""
    safe, ids = _RemovedOnFailure(store), {}
    try:
        for name in names:
            ids[name] = optuna.artifacts.upload_artifact(
                artifact_store=safe, study_or_trial=study_or_trial,
                file_path=str(directory / name))
    except BaseException:
        for artifact_id in ids.values():
            _remove_quietly(store, artifact_id)
        raise
    return ids


def upload_checkpoint(trial: optuna.Trial, directory: Path, store) -> dict[str, str]:
    """Upload a checkpoint directory's files and record their ids and digests on `trial`."""
    names = FILES + ((INT8_GRAPH_FILE,) if (directory / INT8_GRAPH_FILE).is_file() else ())
    digests = {name: file_sha256(directory / name) for name in names}
    ids = _upload_all(trial, directory, names, store)
    record_trial(trial, checkpoint_artifacts=ids, checkpoint_sha256=digests)
    return ids


def _cache_key(ids: dict[str, str]) -> str:
    """A short name for a set of artifacts: the same ids, the same folder; other ids, another."""
    joined = ",".join(f"{name}={ids[name]}" for name in sorted(ids))
    return hashlib.sha256(joined.encode()).hexdigest()[:16]


def trial_cache_folder(trial: FrozenTrial, cache_dir: Path) -> Path:
    """Where `trial`'s checkpoint is cached on this machine (see `local_checkpoint`)."""
    ids = TrialRecord.of(trial).checkpoint_artifacts or {}
    return cache_dir / f"trial-{trial.number:05d}-{_cache_key(ids)}"


def local_checkpoint(trial: FrozenTrial, store, cache_dir: Path,
                     study_uid: str | None = None) -> Path:
    """The trial's checkpoint directory on this machine, downloaded first if needed, and
    verified: every file's SHA-256 as the trial recorded it, the trial number and the study
    (`study_uid`, when the study has one) as the checkpoint's description records them."""
    record = TrialRecord.of(trial)
    if not record.checkpoint_artifacts:
        raise CheckpointError(f"trial {trial.number} has no checkpoint: it was not fine-tuned, "
                              "or it fell off the front and its weights were deleted (search with "
                              "keep_checkpoints='all' to keep every trial's)")
    what = f"trial {trial.number}'s checkpoint"
    local = _downloaded(record.checkpoint_artifacts, record.checkpoint_sha256, store,
                        trial_cache_folder(trial, cache_dir), what,
                        "it fell off the front and was deleted (search with "
                        "keep_checkpoints='all' to keep every trial's)")
    _check_owner(local, what, trial.number, study_uid)
    return local


def local_finetuned(number: int, entry: dict, store, cache_dir: Path,
                    study_uid: str | None = None) -> Path:
    """The directory of trial `number`'s full fine-tune (`store_finetuned`'s `entry`),
    downloaded first if needed and verified like `local_checkpoint`."""
    ids = entry["artifacts"]
    what = f"trial {number}'s full fine-tune"
    local = _downloaded(ids, entry.get("sha256"), store,
                        cache_dir / f"trial-{number:05d}-full-{_cache_key(ids)}", what,
                        "it was deleted")
    _check_owner(local, what, number, study_uid)
    return local


def _mismatches(local: Path, digests: dict[str, str] | None, names) -> list[str]:
    """The files of `local` missing or whose SHA-256 is not the recorded one."""
    wrong = []
    for name in names:
        path = local / name
        if not path.is_file():
            wrong.append(f"{name} is missing")
        elif digests and name in digests and file_sha256(path) != digests[name]:
            wrong.append(f"{name} has SHA-256 {file_sha256(path)[:12]}..., the study recorded "
                         f"{digests[name][:12]}...")
    return wrong


def _downloaded(ids: dict[str, str], digests: dict[str, str] | None, store, local: Path,
                what: str, gone: str) -> Path:
    if local.is_dir():
        stale = _mismatches(local, digests, ids)
        if not stale:
            return local
        logger.warning(f"autoprune: the cached copy of {what} in {local} does not match the "
                       f"study's record ({'; '.join(stale)}); fetching it again")
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
    wrong = _mismatches(staging, digests, ids)
    if wrong:
        shutil.rmtree(staging, ignore_errors=True)
        raise CheckpointError(f"{what} in the artifact store is not the one the study recorded "
                              f"({'; '.join(wrong)}): the store was changed, or it is another "
                              "study's; refusing to load it")
    if local.exists():
        shutil.rmtree(local)
    staging.rename(local)
    return local


def _check_owner(local: Path, what: str, number: int, study_uid: str | None) -> None:
    """Refuse a checkpoint whose description names another trial or another study."""
    description = read_description(local)
    recorded = description.get("trial")
    if recorded is not None and recorded != number:
        raise CheckpointError(f"{what} ({local}) describes trial {recorded}, not trial {number}")
    owner = description.get("study_uid")
    if study_uid and owner and owner != study_uid:
        raise CheckpointError(f"{what} ({local}) belongs to study "
                              f"{description.get('study', '?')!r} ({owner}), not to this one "
                              f"({study_uid}); refusing to load another study's weights")


def store_finetuned(study: optuna.Study, number: int, model, base_model, brief_directory: Path,
                    store, progress: dict, seconds: float) -> dict:
    """Save trial `number`'s full fine-tune as a checkpoint beside its brief one (kept) and
    record it on the study (`StudyRecord.finetuned`); an earlier full fine-tune is replaced."""
    description = read_description(brief_directory)
    with tempfile.TemporaryDirectory(prefix="autoprune-finetuned-") as staging:
        save_checkpoint(staging, model, base_model, description["pruning_history"],
                        inputs_from_spec(description["example_inputs"]),
                        extra={"trial": number, "study": study.study_name,
                               "study_uid": StudyRecord.of(study).uid,
                               "config": description.get("config"),
                               "measurement": description.get("measurement"),
                               "accuracy": progress["best_metric"],
                               "full_finetune": {"epochs": progress["completed"],
                                                 "best_epoch": progress["best_epoch"]}})
        digests = {name: file_sha256(Path(staging) / name) for name in FILES}
        ids = _upload_all(study, Path(staging), FILES, store)
    entry = {"artifacts": ids, "sha256": digests, "epochs": progress["completed"],
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
    shutil.rmtree(trial_cache_folder(trial, cache_dir), ignore_errors=True)
