"""Exceptions raised by autoprune. Every message says what went wrong and what to do."""


class AutopruneError(Exception):
    """Base class of every error autoprune raises on purpose."""


class InvalidInputError(AutopruneError, ValueError):
    """Bad input found before any trial ran: nothing was computed or recorded."""


class SearchSpaceError(AutopruneError, ValueError):
    """A search-space file is malformed; the message names the file and the field."""


class CheckpointError(AutopruneError):
    """A checkpoint is missing, truncated, tampered with or does not fit the base model."""


class TrialFailure(AutopruneError):
    """One trial cannot go on (NaN loss, a model that cannot be pruned); the study continues."""


class ExportError(AutopruneError):
    """An export failed, or its reloaded model does not give the PyTorch outputs."""


class NoCandidateError(AutopruneError):
    """No front member meets the limits asked for."""


class RepeatedFailureError(AutopruneError):
    """A search stopped because its trials kept failing with the same error."""
