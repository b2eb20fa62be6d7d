"""PyTorch on a CUDA GPU: synchronised timing, and a CUDA graph where the model allows.

A small model on a GPU is bound by kernel launches: eager timing shows the CPU issuing
kernels, not the GPU computing, and a pruned model reads no faster. Replaying a captured
CUDA graph launches the whole forward pass at once, so the figure follows the work. A model
that cannot be captured (data-dependent control flow, host synchronisation) is timed eagerly,
and the log says so.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn as nn

from ..runtime.language_model import generation_runner, is_causal_lm
from ..runtime.model_io import run_model
from .base import Runnable, Target, register_target

logger = logging.getLogger(__name__)


@register_target
class TorchCUDA(Target):
    name = "cuda"
    description = "PyTorch on a CUDA GPU, CUDA graphs where the model allows"
    device_type = "cuda"
    use_graphs = True

    def synchronize(self) -> None:
        torch.cuda.synchronize(self.device)

    def runnable(self, model: nn.Module, inputs: Any) -> Runnable:
        model.eval()
        if is_causal_lm(model):  # a growing KV cache: no fixed graph to capture
            return generation_runner(model, inputs, self.decode_tokens, self.lm_latency)
        eager = lambda: run_model(model, inputs)  # noqa: E731
        if not self.use_graphs:
            return eager
        try:
            return self._graph(eager)
        except Exception as err:  # not capturable: eager timing is still a valid figure
            logger.info(f"CUDA graph capture failed ({type(err).__name__}: {err}); "
                        "timing eagerly")
            return eager

    def _graph(self, eager: Runnable) -> Runnable:
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.inference_mode(), torch.cuda.stream(stream):
            for _ in range(3):  # warm-up on a side stream, as capture requires
                eager()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph):
            eager()  # the outputs stay in the graph's memory pool
        return _GraphReplay(graph, eager)

    def activation_peak_bytes(self, model: nn.Module, inputs: Any) -> int:
        with torch.inference_mode():
            self.synchronize()
            before = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            run_model(model, inputs)
            self.synchronize()
            return max(0, torch.cuda.max_memory_allocated(self.device) - before)


class _GraphReplay:
    """A captured graph and what it reads. Replay reads the model's parameters and the example
    inputs at the addresses they had when captured, so they must live as long as the graph:
    `eager` holds both. (Holding the graph alone, a caller that builds a variant and its input
    in a loop, like the latency model's table, freed them and the replay read freed memory:
    "an illegal memory access", seen on an H100.)"""

    def __init__(self, graph: torch.cuda.CUDAGraph, eager: Runnable):
        self.graph, self.eager = graph, eager

    def __call__(self) -> None:
        self.graph.replay()
