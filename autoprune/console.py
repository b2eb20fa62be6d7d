"""What a person watching a run sees: the package's log lines and its progress bars.

Library code never prints. Every module logs to a child of the `autoprune` logger
(`logging.getLogger(__name__)`), and the application decides where lines go, as with Optuna,
timm or transformers: the CLI installs `console_handler()`; `search(verbose=True)` installs one
only for the duration of the call and only when nobody has configured logging; a user's own
handlers and levels are left as they are.

Progress bars (tqdm, which Optuna already depends on) are drawn only on a terminal and only
while the `autoprune` logger passes INFO. Elsewhere (CI logs, files) a long task writes a
plain log line at most every `PLAIN_LINE_SECONDS`, and nothing when the logger is quieter.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from typing import Iterator

from tqdm import tqdm

LOGGER_NAME = "autoprune"
PLAIN_LINE_SECONDS = 30.0  # how often a long task says where it is when there is no terminal

logger = logging.getLogger(LOGGER_NAME)
logger.addHandler(logging.NullHandler())  # the library convention: silent until configured


def is_terminal() -> bool:
    """Whether standard error is a terminal a progress bar can redraw."""
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def bars_shown() -> bool:
    return logger.isEnabledFor(logging.INFO) and is_terminal()


class ConsoleHandler(logging.StreamHandler):
    """Writes each message as a plain line to standard error, above any progress bar."""

    def __init__(self):
        super().__init__(sys.stderr)
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if not is_terminal():
            return super().emit(record)
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


def console_handler(level: int = logging.INFO) -> ConsoleHandler:
    """Send autoprune's messages at `level` and above to standard error (what the CLI does)."""
    handler = next((h for h in logger.handlers if isinstance(h, ConsoleHandler)), None)
    if handler is None:
        handler = ConsoleHandler()
        logger.addHandler(handler)
    logger.setLevel(level)
    return handler


def _configured_elsewhere() -> bool:
    """Whether a handler other than a NullHandler would receive autoprune's records."""
    current: logging.Logger | None = logger
    while current is not None:
        if any(not isinstance(h, logging.NullHandler) for h in current.handlers):
            return True
        current = current.parent if current.propagate else None
    return False


@contextlib.contextmanager
def verbosity(verbose: bool) -> Iterator[None]:
    """`search(verbose=...)` for the length of one call, restored afterwards.

    verbose=True: INFO lines unless the user set the `autoprune` logger's level, printed to
    standard error unless a handler is already configured. verbose=False: warnings only.
    """
    level, added = logger.level, None
    if not verbose:
        logger.setLevel(logging.WARNING)
    else:
        if level == logging.NOTSET:
            logger.setLevel(logging.INFO)
        if not _configured_elsewhere():
            added = ConsoleHandler()
            logger.addHandler(added)
    try:
        yield
    finally:
        logger.setLevel(level)
        if added is not None:
            logger.removeHandler(added)


@contextlib.contextmanager
def quiet_optuna(failures_too: bool = False) -> Iterator[None]:
    """Optuna's per-trial INFO lines off for one call; with `failures_too` also its warning
    and traceback per failed trial (autoprune logs the reason in one line); the caller's
    verbosity comes back."""
    import optuna

    before = optuna.logging.get_verbosity()
    quietest = optuna.logging.ERROR if failures_too else optuna.logging.WARNING
    optuna.logging.set_verbosity(max(before, quietest))
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)


class ProgressBar:
    """A tqdm bar on a terminal; elsewhere an occasional plain line; nothing when quiet.

    `update(n, **figures)` advances by n, `advance_to(done)` sets the position (for a bar of
    seconds); figures (a loss, say) are shown beside the count. `plain_lines=False` for a bar
    whose progress other log lines already tell.
    """

    def __init__(self, description: str, total: float | None, unit: str = "step",
                 leave: bool = True, plain_lines: bool = True,
                 plain_every: float = PLAIN_LINE_SECONDS, log: logging.Logger = logger):
        self.description, self.total, self.unit, self.log = description, total, unit, log
        self.done, self.plain_every = 0, plain_every
        self.figures: dict[str, str] = {}
        self.started = self.last_line = time.monotonic()
        self.plain = plain_lines and log.isEnabledFor(logging.INFO) and not is_terminal()
        self.bar = None
        if bars_shown():
            # A bar of seconds shows time spent and left, not a rate of seconds per second.
            timed = "{desc}: {percentage:3.0f}%|{bar}| {elapsed} of {total:.0f} s, {remaining} left"
            self.bar = tqdm(total=total, desc=description, unit=unit, leave=leave,
                            file=sys.stderr, dynamic_ncols=True,
                            bar_format=timed if unit == "s" else None)

    def update(self, n: float = 1, **figures) -> None:
        self.advance_to(self.done + n, **figures)

    def advance_to(self, done: float, **figures) -> None:
        step, self.done = done - self.done, done
        self.figures = {key: f"{value:.4g}" if isinstance(value, float) else str(value)
                        for key, value in figures.items()} or self.figures
        if self.bar is not None:
            if self.figures:
                self.bar.set_postfix(self.figures, refresh=False)
            self.bar.update(step)
        elif self.plain and time.monotonic() - self.last_line >= self.plain_every:
            self.last_line = time.monotonic()
            self.log.info(self.plain_line())

    def plain_line(self) -> str:
        count = f"{self.done:g}" + (f"/{self.total:g}" if self.total else "") + f" {self.unit}"
        figures = "".join(f", {key} {value}" for key, value in self.figures.items())
        eta = ""
        if self.total and self.done:
            seconds = (time.monotonic() - self.started) * (self.total - self.done) / self.done
            eta = f", about {seconds:.0f} s left"
        return f"{self.description}: {count}{figures}{eta}"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
