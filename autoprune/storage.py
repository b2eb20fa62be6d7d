"""Where a study lives: Optuna's RDB storage with heartbeats, and its artifact store.

SQLite is the single-machine default and PostgreSQL the multi-machine one (`pip install
'autoprune[postgres]'`, psycopg 3). Every worker sends a heartbeat while a trial runs; a trial whose
heartbeat stops (the process was killed, the machine rebooted) is marked failed by the next
worker that starts a trial, and Optuna's `RetryHeartbeatStaleTrialCallback` enqueues it
again with the same parameters. Trial checkpoints go to an artifact store (a directory every
worker can reach, or any `optuna.artifacts` store), so any machine can export any trial.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback

from .errors import InvalidInputError

HEARTBEAT_SECONDS = 30
MAX_RETRIES = 3  # how often a trial whose worker died is run again


def open_storage(storage: str | BaseStorage, heartbeat_interval: int = HEARTBEAT_SECONDS,
                 grace_period: int | None = None) -> BaseStorage:
    """An Optuna storage for `storage`: a URL, or a storage object used as it is."""
    if isinstance(storage, BaseStorage):
        return storage
    if not isinstance(storage, str) or "://" not in storage:
        raise InvalidInputError(f"storage must be a database URL such as sqlite:///run.db or "
                                f"postgresql://user@host/db, got {storage!r}")
    scheme = storage.split("://")[0]
    if scheme.startswith("postgresql"):
        try:  # SQLAlchemy 2.1 reads postgresql:// with psycopg 3
            import psycopg  # noqa: F401
        except ImportError:
            raise InvalidInputError("a PostgreSQL storage needs psycopg: "
                                    "pip install 'autoprune[postgres]'") from None
    elif not scheme.startswith(("sqlite", "mysql")):
        raise InvalidInputError(f"unsupported storage {storage!r}: use sqlite:/// or postgresql://")
    if scheme.startswith("sqlite"):
        Path(storage.split(":///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna since v2.8
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(
                storage, heartbeat_interval=heartbeat_interval,
                grace_period=grace_period or 2 * heartbeat_interval,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(MAX_RETRIES),
                engine_kwargs=None if scheme.startswith("sqlite") else {"pool_pre_ping": True})
    except Exception as err:  # SQLAlchemy raises many types for a bad URL or a down server
        raise InvalidInputError(f"cannot open storage {storage!r}: {type(err).__name__}: {err}") from err


def open_artifact_store(location) -> "optuna.artifacts._protocol.ArtifactStore":
    """A directory path becomes a `FileSystemArtifactStore`; a store object is used as is."""
    from optuna.artifacts import FileSystemArtifactStore

    if isinstance(location, (str, Path)):
        Path(location).mkdir(parents=True, exist_ok=True)
        return FileSystemArtifactStore(str(location))
    return location
