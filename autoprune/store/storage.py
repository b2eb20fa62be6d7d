"""Where a study lives: Optuna's RDB storage with heartbeats, and its artifact store.

SQLite is the single-machine default and PostgreSQL the multi-machine one (`pip install
'autoprune[postgres]'`, psycopg 3). Every worker sends a heartbeat while a trial runs; a trial whose
heartbeat stops (the process was killed, the machine rebooted) is marked failed by the next
worker that starts a trial, and Optuna's `RetryHeartbeatStaleTrialCallback` enqueues it
again with the same parameters. Trial checkpoints go to an artifact store (a directory every
worker can reach, or any `optuna.artifacts` store), so any machine can export any trial.

A storage URL may hold a database password. It is used to connect and nowhere else: logs,
reports, errors and study records show `storage_url()` / `redact_url()`, password masked.
"""

from __future__ import annotations

import logging
import re
import time
import warnings
from pathlib import Path
from urllib.parse import quote, quote_plus

import optuna
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback

from ..errors import InvalidInputError

HEARTBEAT_SECONDS = 30
MAX_RETRIES = 3  # how often a trial whose worker died is run again
STORAGE_ENV = "AUTOPRUNE_STORAGE"  # the CLI's default storage URL: keeps passwords off command lines
MASK = "***"

logger = logging.getLogger(__name__)


def _secrets(url: str) -> list[str]:
    """The password of a database URL: in its user part or as a `password` query argument."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # not a URL SQLAlchemy reads: the user:password@ form
        match = re.search(r"://[^/@:]*:([^/@]*)@", url)
        return [match.group(1)] if match and match.group(1) else []
    found = [parsed.password] if parsed.password else []
    for key, value in parsed.query.items():
        if key.lower() == "password":
            found += [value] if isinstance(value, str) else list(value)
    return [str(secret) for secret in found if secret]


def redact_url(url: str) -> str:
    """`url` with its password replaced by ***: how a storage URL is shown, logged or stored."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        text = make_url(str(url)).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # unparsable (or a bad port): mask the user:password@ form
        text = re.sub(r"(://[^/@:]*:)[^/@]*@", rf"\g<1>{MASK}@", str(url))
    return re.sub(r"(?i)(password=)[^&]*", rf"\g<1>{MASK}", text)


def redact(text: str, url: str) -> str:
    """`text` (an error message, say) with the password of `url` masked wherever it appears."""
    for secret in _secrets(str(url)):
        for form in {secret, quote(secret, safe=""), quote_plus(secret)}:
            text = text.replace(form, MASK)
    return text


def has_password(url: str) -> bool:
    return bool(_secrets(str(url))) or f":{MASK}@" in str(url)


def storage_url(storage: str | BaseStorage) -> str:
    """What a storage is called in logs, reports and errors: its URL, password masked."""
    url = storage if isinstance(storage, str) else getattr(storage, "url", type(storage).__name__)
    return redact_url(url)


def open_storage(storage: str | BaseStorage, heartbeat_interval: int = HEARTBEAT_SECONDS,
                 grace_period: int | None = None) -> BaseStorage:
    """An Optuna storage for `storage`: a URL, or a storage object used as it is."""
    if isinstance(storage, BaseStorage):
        return storage
    if not isinstance(storage, str) or "://" not in storage:
        shown = redact_url(storage) if isinstance(storage, str) else repr(storage)
        raise InvalidInputError(f"storage must be a database URL such as sqlite:///run.db or "
                                f"postgresql://user@host/db, got {shown!r}")
    scheme = storage.split("://")[0]
    if scheme.startswith("postgresql"):
        try:  # SQLAlchemy 2.1 reads postgresql:// with psycopg 3
            import psycopg  # noqa: F401
        except ImportError:
            raise InvalidInputError("a PostgreSQL storage needs psycopg: "
                                    "pip install 'autoprune[postgres]'") from None
    elif not scheme.startswith(("sqlite", "mysql")):
        raise InvalidInputError(f"unsupported storage {redact_url(storage)!r}: use sqlite:/// "
                                "or postgresql://")
    if scheme.startswith("sqlite"):
        _make_sqlite_folder(storage)
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna since v2.8
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(
                storage, heartbeat_interval=heartbeat_interval,
                grace_period=grace_period or 2 * heartbeat_interval,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(MAX_RETRIES),
                engine_kwargs=None if scheme.startswith("sqlite") else {"pool_pre_ping": True})
    except Exception as err:  # SQLAlchemy raises many types for a bad URL or a down server
        # `from None`: the original error's text may quote the URL, password included.
        raise InvalidInputError(f"cannot open storage {redact_url(storage)!r}: "
                                f"{type(err).__name__}: {redact(str(err), storage)}") from None


def _make_sqlite_folder(url: str) -> None:
    path = url.split(":///", 1)[1] if ":///" in url else ""
    if not path or path == ":memory:":
        return
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a file where a folder should be, no permission, a full disk
        raise InvalidInputError(f"cannot create the folder of the SQLite database {path}: "
                                f"{err.strerror or err}") from None


def open_artifact_store(location) -> "optuna.artifacts._protocol.ArtifactStore":
    """A directory path becomes a `FileSystemArtifactStore`; a store object is used as is."""
    from optuna.artifacts import FileSystemArtifactStore

    if isinstance(location, (str, Path)):
        Path(location).mkdir(parents=True, exist_ok=True)
        return FileSystemArtifactStore(str(location))
    return location


class StorageOutage:
    """Rides out a storage that stops answering for a while (a database server restarted,
    a network blip): `survive(err)` sleeps and returns when `err` is a lost connection and
    the outage is shorter than `patience` seconds, else raises it. Whatever was in flight
    then is failed by Optuna's heartbeat check and run again (`RetryHeartbeatStaleTrialCallback`)."""

    def __init__(self, patience: float = 300.0, pause: float = 2.0):
        self.patience, self.pause, self.since = patience, pause, None

    @staticmethod
    def is_lost_connection(err: BaseException) -> bool:
        from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

        while err is not None:
            if isinstance(err, (OperationalError, InterfaceError)) or (
                    isinstance(err, DBAPIError) and err.connection_invalidated):
                return True
            err = err.__cause__ or err.__context__
        return False

    def survive(self, err: BaseException) -> None:
        if not self.is_lost_connection(err):
            raise err
        now = time.monotonic()
        self.since = self.since or now
        if now - self.since > self.patience:
            raise err
        logger.warning(f"autoprune: lost the connection to the storage ({type(err).__name__}); "
                       f"trying again in {self.pause:g} s")
        time.sleep(self.pause)

    def answered(self) -> None:
        """The storage answered again."""
        self.since = None
