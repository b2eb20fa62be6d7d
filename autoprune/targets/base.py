"""Where and how a model is timed: the `Target` interface and its registry.

A target turns a model into something to run (`runnable`: eager PyTorch runs the module; a
CUDA target may capture a CUDA graph; the ONNX Runtime target exports the model and opens a
session) and times runnables interleaved, block by block, so that a shared machine's
drift falls on every model alike. Each target lives in a file of its own and registers itself
with `@register_target`.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Hashable

import torch
import torch.nn as nn

from ..errors import InvalidInputError

Runnable = Callable[[], Any]  # one inference on fixed example inputs


class Target:
    """A place to time models. Subclasses say how to run and synchronise; timing is shared."""

    name = "abstract"
    description = ""
    device_type = "cpu"  # the torch device type it runs on
    precisions: tuple[str, ...] = ("fp32",)  # what it can time (search-space `precision`)
    # a causal LM is timed generating this many tokens with the KV cache after its example
    # batch as the prompt, the prompt's reading not timed ("decode"), timed ("generate") or
    # alone ("prefill"): runtime/language_model.py; SearchOptions.lm_latency, decode_tokens
    lm_latency: str = "decode"
    decode_tokens: int = 16

    @classmethod
    def create(cls, device: torch.device, threads: int) -> "Target":
        if device.type != cls.device_type:
            raise InvalidInputError(f"target {cls.name!r} runs on {cls.device_type}, "
                                    f"not on {device}")
        return cls(device, threads)

    def __init__(self, device: torch.device, threads: int):
        self.device = device
        self.threads = threads

    def check(self, model: nn.Module, inputs: Any) -> None:
        """Raise `InvalidInputError` if this target cannot run `model` on `inputs` (called
        before any work)."""

    def runnable(self, model: nn.Module, inputs: Any) -> Runnable:
        """A zero-argument callable running one inference of `model` on `inputs`.

        The place for conversion (export, graph capture) before timing; `model` is not changed.
        """
        raise NotImplementedError

    def synchronize(self) -> None:
        """Wait until queued work is done (asynchronous devices)."""

    def activation_peak_bytes(self, model: nn.Module, inputs: Any) -> int:
        """Peak bytes of activations alive at once during one inference."""
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.name} ({self.description}), {self.threads} threads"

    @contextlib.contextmanager
    def timing(self):
        """The conditions of a measurement: the target's thread count, inference mode."""
        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                yield
        finally:
            torch.set_num_threads(before)

    def _block_seconds(self, run: Runnable, calls: int) -> float:
        self.synchronize()
        start = time.perf_counter()
        for _ in range(calls):
            run()
        self.synchronize()
        return time.perf_counter() - start

    def time_interleaved(self, runnables: dict[Hashable, Runnable], rounds: int,
                         block_seconds: float, warmup: int = 2,
                         on_round: Callable[[], None] | None = None,
                         settled: Callable[[dict], bool] | None = None,
                         max_rounds: int | None = None) -> dict[Hashable, list[float]]:
        """Milliseconds per inference of each runnable, one figure per round.

        Each runnable gets a fixed number of calls per block (about `block_seconds`, at least
        one); within a round the blocks run in turn, in alternating order from round to round,
        so neither drift nor order favours one of them. With `settled`, rounds go on past
        `rounds` (up to `max_rounds`) until it says the samples so far are enough.
        """
        with self.timing():
            calls = {}
            for key, run in runnables.items():
                for _ in range(max(0, warmup - 1)):
                    run()
                once = self._block_seconds(run, 1)  # the last warm-up call sizes the blocks
                calls[key] = max(1, min(100_000, round(block_seconds / max(once, 1e-7))))
            samples: dict[Hashable, list[float]] = {key: [] for key in runnables}
            keys = list(runnables)
            index = 0
            while index < rounds or (settled is not None and index < (max_rounds or rounds)
                                     and not settled(samples)):
                for key in (keys if index % 2 == 0 else keys[::-1]):
                    seconds = self._block_seconds(runnables[key], calls[key])
                    samples[key].append(seconds * 1e3 / calls[key])
                if on_round is not None:
                    on_round()
                index += 1
        return samples


TARGETS: dict[str, type[Target]] = {}


def register_target(cls: type[Target]) -> type[Target]:
    """Class decorator: make a target available by its `name`."""
    if cls.name in TARGETS:
        raise ValueError(f"target {cls.name!r} is already registered")
    TARGETS[cls.name] = cls
    return cls


def known_targets() -> str:
    return ", ".join(f"{name} ({cls.description})" for name, cls in sorted(TARGETS.items()))


def get_target(name: str | None, device: str | torch.device = "cpu",
               threads: int | None = None) -> Target:
    """The target called `name` on `device` (None: PyTorch eager on the device's type)."""
    device = torch.device(device)
    name = name or device.type
    if name not in TARGETS:
        raise InvalidInputError(f"unknown target {name!r}; known targets: {known_targets()}")
    return TARGETS[name].create(device, threads or torch.get_num_threads())
