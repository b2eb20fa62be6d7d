"""Running a model on the target device: what goes in and out (`model_io`), latency and memory
(`measure`), distillation fine-tuning (`finetune`) and the metric (`evaluate`)."""

from .evaluate import evaluate, top1_accuracy
from .finetune import Distillation, finetune
from .measure import Measurement, interleaved_latency_ms, measure
from .model_io import logits_of, run_model, to_device

__all__ = ["Distillation", "Measurement", "evaluate", "finetune", "interleaved_latency_ms",
           "logits_of", "measure", "run_model", "to_device", "top1_accuracy"]
