"""Hardware targets: where and how models are timed (see base.py); one file per target."""

from . import onnxruntime_cpu, torch_cpu, torch_cuda  # noqa: F401  (each registers itself)
from .base import TARGETS, Runnable, Target, get_target, known_targets, register_target

__all__ = ["TARGETS", "Runnable", "Target", "get_target", "known_targets", "register_target"]
