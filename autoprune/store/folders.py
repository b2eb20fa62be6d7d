"""Which folder under `output_dir` holds a study's files (cache, report, fine-tunes, default
artifacts), so two studies of one name never share one.

`reports/<name>/` is the study's folder, marked with `study.json` (the study's uid, its
storage as shown, when it was made). A new study whose name's folder already holds another
study's files gets `reports/<name>-<uid prefix>/` instead, and says so; nothing of the other
study is touched. Readers (`SearchResult.from_storage`, the CLI) find the folder by the uid.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path

from ..errors import InvalidInputError
from .checkpoint import atomic_write_text

MARKER = "study.json"
STUDY_FILES = ("trials", "artifacts", "finetune", "report.html")  # what a study leaves behind

logger = logging.getLogger(__name__)


def check_study_name(name: str) -> str:
    """A study name is also a folder name: refuse what would leave `output_dir`."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidInputError(f"study_name must be a non-empty string, got {name!r}")
    if "/" in name or "\\" in name or name in (".", "..") or ".." in name or "\0" in name:
        raise InvalidInputError(f"study_name {name!r} may not contain '/', '\\' or '..': it "
                                "names the study's folder inside output_dir")
    return name


def _owner(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _holds_files(folder: Path) -> bool:
    return any((folder / name).exists() for name in STUDY_FILES)


def study_folder(output_dir: str | Path, name: str, uid: str | None, created: bool,
                 where: str) -> Path:
    """The folder of study `name` (`uid`) under `output_dir`, made and marked if new.
    `created`: the study was made by this call (an unmarked folder with files is then
    another, earlier study's); `where`: its storage as shown (password masked)."""
    output_dir = Path(output_dir)
    own = output_dir / name
    if uid is None:  # a study from before uids: its folder is its name's
        return own
    apart = output_dir / f"{name}-{uid[:8]}"
    for folder in (own, apart):
        if (_owner(folder) or {}).get("uid") == uid:
            return folder
    owner = _owner(own)
    if owner is None and not (created and _holds_files(own)):
        folder = own  # a new folder, or an unmarked one of this (resumed) study
    else:
        folder = apart
        logger.warning(
            f"autoprune: {own}/ holds the files of another study named {name!r} "
            + (f"(uid {owner.get('uid')}, storage {owner.get('storage')}, made "
               f"{owner.get('created')})" if owner else "(from before studies were marked)")
            + f"; this study's files go to {apart}/ and nothing there is touched")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / MARKER, json.dumps(
        {"study": name, "uid": uid, "storage": where,
         "created": datetime.now().isoformat(timespec="seconds")}, indent=1))
    return folder


def existing_study_folder(output_dir: str | Path, name: str, uid: str | None) -> Path:
    """The folder `study_folder` chose for study `uid`, without making one."""
    output_dir = Path(output_dir)
    if uid is not None:
        apart = output_dir / f"{name}-{uid[:8]}"
        if (_owner(apart) or {}).get("uid") == uid:
            return apart
    return output_dir / name
