"""The causal language-model task: perplexity to score, next-token loss with distillation on
the token distributions to train.

A batch is `(input_ids, labels)`: `labels` are the tokens to predict at each position before
the shift (usually `input_ids` itself, with -100 where a position is padding or must not be
learned), as HuggingFace's causal LMs take them. The model runs on `input_ids` alone and its
logits are shifted here, so any module returning `[batch, length, vocabulary]` logits (or an
output with `.logits`) works. Perplexity is lower-is-better: a search on this task minimizes.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .finetune import Distillation
from .model_io import logits_of, run_model, to_device
from .task import MINIMIZE, Task

IGNORE = -100  # a label not predicted (padding), as in HuggingFace and F.cross_entropy


def is_causal_lm_class(name: str) -> bool:
    """A HuggingFace causal LM class name (`...ForCausalLM`, or a GPT-2 `...LMHeadModel`)."""
    return name.endswith(("ForCausalLM", "LMHeadModel"))


def is_causal_lm(model: nn.Module) -> bool:
    return is_causal_lm_class(type(model).__name__)


def _shifted(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Position t's logits predict token t + 1: (predictions [N, vocab], targets [N])."""
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(f"a causal LM needs [batch, length, vocabulary] logits for "
                         f"[batch, length] labels, got {tuple(logits.shape)} for "
                         f"{tuple(labels.shape)}")
    return (logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the next token over the positions that have a label."""
    predictions, targets = _shifted(logits, labels)
    return F.cross_entropy(predictions, targets, ignore_index=IGNORE)


def causal_lm_loss(student: nn.Module, teacher: nn.Module, batch: Any,
                   distillation: Distillation) -> torch.Tensor:
    """Next-token loss plus, weighted by `alpha`, the KL divergence from the teacher's token
    distributions (softened by the temperature) at every labelled position."""
    input_ids, labels = batch
    logits = logits_of(run_model(student, input_ids))
    loss = next_token_loss(logits, labels) if distillation.alpha < 1 else logits.new_zeros(())
    if distillation.alpha > 0:
        with torch.no_grad():
            teacher_logits = logits_of(run_model(teacher, input_ids))
        predictions, targets = _shifted(logits, labels)
        reference, _ = _shifted(teacher_logits, labels)
        kept = targets != IGNORE
        t = distillation.temperature
        kd = F.kl_div(F.log_softmax(predictions[kept] / t, dim=-1),
                      F.log_softmax(reference[kept] / t, dim=-1),
                      log_target=True, reduction="batchmean") * t ** 2
        loss = (1 - distillation.alpha) * loss + distillation.alpha * kd
    return loss


def perplexity(model: nn.Module, loader: Iterable, device) -> float:
    """exp of the mean next-token cross-entropy over every labelled token of `loader`."""
    total, count = 0.0, 0
    model.to(device).eval()
    with torch.inference_mode():
        for input_ids, labels in loader:
            input_ids, labels = to_device(input_ids, device), to_device(labels, device)
            predictions, targets = _shifted(logits_of(run_model(model, input_ids)), labels)
            total += F.cross_entropy(predictions.float(), targets, ignore_index=IGNORE,
                                     reduction="sum").item()
            count += int((targets != IGNORE).sum())
    if count == 0:
        raise ValueError("no labelled tokens to score: every label is -100")
    return math.exp(total / count)


def causal_lm_task(val: Iterable, device) -> Task:
    """Perplexity on `val` (minimized), next-token loss with token-level distillation."""
    return Task(score=lambda model: perplexity(model, val, device), loss=causal_lm_loss,
                direction=MINIMIZE, metric_name="perplexity", top1=False)


# what a causal LM's latency times (SearchOptions.lm_latency): the new tokens alone, the
# prompt read and the new tokens, or the prompt alone
LM_LATENCIES = ("decode", "generate", "prefill")


def generation_runner(model: nn.Module, input_ids: torch.Tensor, new_tokens: int,
                      timing: str = "generate"):
    """A zero-argument callable running what a user of a causal LM waits for.

    "generate": read the prompt batch `input_ids` (prefill), then generate `new_tokens` tokens
    greedily, one forward pass each on the last token with the KV cache. "decode": only those
    `new_tokens` passes: the prompt is read once, here, and each call generates from its cache
    and then cuts the cache back to the prompt, so every call does the same work (batch x
    new_tokens / latency is decode throughput). "prefill", or `new_tokens=0`: the prompt alone.
    """
    model.eval()
    # transformers 5.2x names the KV cache `cache`; earlier releases `past_key_values`
    name = ("cache" if "cache" in inspect.signature(model.forward).parameters
            else "past_key_values")

    def next_token(output):
        token = output.logits[:, -1:].argmax(-1)
        return model(input_ids=token, use_cache=True, **{name: kv_cache(output)})

    if timing == "prefill" or new_tokens == 0:
        return lambda: model(input_ids=input_ids, use_cache=False).logits
    if timing == "generate":
        def generate():
            output = model(input_ids=input_ids, use_cache=True)
            for _ in range(new_tokens):
                output = next_token(output)
            return output.logits
        return generate
    with torch.inference_mode():
        prompt = model(input_ids=input_ids, use_cache=True)

    def decode():
        output = prompt
        for _ in range(new_tokens):
            output = next_token(output)
        kv_cache(prompt).crop(-new_tokens)  # negative: tokens removed from the end
        return output.logits

    return decode


def kv_cache(output: Any) -> Any:
    """The KV cache a HuggingFace model output carries (None without one)."""
    for name in ("cache", "past_key_values"):
        value = output.get(name) if hasattr(output, "get") else None
        if value is not None:
            return value
    return None
