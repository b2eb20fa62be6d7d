"""The registry of model builders the conformance suite runs: one entry per supported family.

Tiny widths and small inputs keep the suite to minutes on two cores. `python tests/model_zoo.py`
prints, for full-width versions, the measured CPU speedup of one pruned configuration against
its MAC reduction (the figures quoted in the README's support table).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn as nn

from tiny_models import TinyConcatNet, TinyResNet


@dataclass(frozen=True)
class ZooModel:
    name: str
    family: str                          # the search-space family file it must match
    build: Callable[[], nn.Module]       # tiny version, for the conformance suite
    kinds: frozenset = frozenset({"stream", "inner"})   # dimension kinds it must offer
    inputs: str = "image"                # "image" (3x32x32) or "tokens"
    full: Callable[[], nn.Module] | None = None          # full width, for the speed table
    needs: str | None = None             # optional package it needs


def _timm(name: str, **kwargs) -> Callable[[], nn.Module]:
    def build():
        import timm
        return timm.create_model(name, pretrained=False, num_classes=10, **kwargs)
    return build


def _torchvision(name: str, **kwargs) -> Callable[[], nn.Module]:
    def build():
        import torchvision
        return getattr(torchvision.models, name)(weights=None, num_classes=10, **kwargs)
    return build


def _timm_densenet(**kwargs) -> Callable[[], nn.Module]:
    def build():
        from timm.models.densenet import DenseNet
        return DenseNet(num_classes=10, **kwargs)
    return build


def _bert(hidden: int = 32, layers: int = 2, heads: int = 4, intermediate: int = 64):
    def build():
        import transformers
        config = transformers.BertConfig(
            vocab_size=100, hidden_size=hidden, num_hidden_layers=layers,
            num_attention_heads=heads, intermediate_size=intermediate,
            max_position_embeddings=64, num_labels=3, attn_implementation="eager")
        return transformers.BertForSequenceClassification(config)
    return build


_TINY_VIT = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4)
_FULL_VIT = dict(img_size=32, patch_size=4)

ZOO = [
    ZooModel("timm resnet18", "resnet", _timm("resnet18", channels=(16, 32, 64, 128), stem_width=16),
             full=_timm("resnet18")),
    ZooModel("timm mobilenetv3_small_050", "mobilenetv3", _timm("mobilenetv3_small_050"),
             full=_timm("mobilenetv3_large_100")),
    ZooModel("timm mobilenetv4_conv_small_050", "mobilenetv3", _timm("mobilenetv4_conv_small_050"),
             full=_timm("mobilenetv4_conv_small")),
    ZooModel("timm efficientnet_b0", "efficientnet", _timm("efficientnet_b0"),
             full=_timm("efficientnet_b0")),
    ZooModel("timm convnext_atto (narrow)", "convnext", _timm("convnext_atto", dims=(16, 32, 64, 128)),
             full=_timm("convnext_atto")),
    ZooModel("timm regnetx_002", "regnet", _timm("regnetx_002"), full=_timm("regnetx_002")),
    ZooModel("timm DenseNet (growth 8)", "densenet",
             _timm_densenet(growth_rate=8, block_config=(2, 2, 2, 2)),
             kinds=frozenset({"inner"}), full=_timm("densenet121")),
    ZooModel("timm ghostnet_050", "ghostnet", _timm("ghostnet_050"), kinds=frozenset({"inner"}),
             full=_timm("ghostnet_100")),
    ZooModel("timm repvgg_a0", "repvgg", _timm("repvgg_a0"), kinds=frozenset({"stream"}),
             full=_timm("repvgg_a0")),
    ZooModel("timm vit (tiny)", "vit", _timm("vit_tiny_patch16_224", **_TINY_VIT),
             kinds=frozenset({"heads", "inner", "stream"}),
             full=_timm("vit_small_patch16_224", **_FULL_VIT)),
    ZooModel("timm deit (tiny)", "vit", _timm("deit_tiny_patch16_224", **_TINY_VIT),
             kinds=frozenset({"heads", "inner", "stream"}),
             full=_timm("deit_tiny_patch16_224", **_FULL_VIT)),
    ZooModel("torchvision resnet18", "resnet", _torchvision("resnet18"),
             full=_torchvision("resnet18")),
    ZooModel("torchvision mobilenet_v2", "mobilenetv3", _torchvision("mobilenet_v2", width_mult=0.5),
             full=_torchvision("mobilenet_v2")),
    ZooModel("torchvision mobilenet_v3_small", "mobilenetv3", _torchvision("mobilenet_v3_small"),
             full=_torchvision("mobilenet_v3_large")),
    ZooModel("torchvision efficientnet_b0", "efficientnet", _torchvision("efficientnet_b0"),
             full=_torchvision("efficientnet_b0")),
    ZooModel("custom residual (TinyResNet)", "default", lambda: TinyResNet(num_classes=10)),
    ZooModel("custom concat/grouped/depthwise", "default", lambda: TinyConcatNet(num_classes=10),
             kinds=frozenset({"inner"})),
    ZooModel("HF BERT encoder (from config)", "hf_encoder", _bert(), kinds=frozenset({"heads", "inner"}),
             inputs="tokens", full=_bert(hidden=256, layers=4, heads=4, intermediate=1024),
             needs="transformers"),
]


def example_inputs(entry: ZooModel, batch: int, seed: int = 0) -> tuple[Any, torch.Tensor]:
    """(inputs, class targets) for one batch."""
    generator = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, 3, (batch,), generator=generator)
    if entry.inputs == "tokens":
        ids = torch.randint(0, 100, (batch, 12), generator=generator)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, targets
    return torch.randn(batch, 3, 32, 32, generator=generator), targets


def _gpt2(hidden: int = 32, layers: int = 2, heads: int = 4, inner: int = 64):
    def build():
        import transformers
        config = transformers.GPT2Config(
            vocab_size=100, n_embd=hidden, n_layer=layers, n_head=heads, n_inner=inner,
            n_positions=64, num_labels=3, pad_token_id=0, attn_implementation="eager")
        return transformers.GPT2ForSequenceClassification(config)
    return build


ZOO.append(ZooModel("HF GPT-2 decoder (from config)", "hf_decoder", _gpt2(),
                    kinds=frozenset({"inner"}), inputs="tokens",
                    full=_gpt2(hidden=256, layers=4, heads=4, inner=1024), needs="transformers"))
