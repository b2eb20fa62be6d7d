"""What outlives a process: checkpoints (safetensors + JSON, `checkpoint`), the artifact store
they live in (`artifacts`), and the Optuna storage of a study (`storage`)."""

from .checkpoint import load_checkpoint, save_checkpoint
from .storage import STORAGE_ENV, open_artifact_store, open_storage, redact_url

__all__ = ["STORAGE_ENV", "load_checkpoint", "open_artifact_store", "open_storage", "redact_url",
           "save_checkpoint"]
