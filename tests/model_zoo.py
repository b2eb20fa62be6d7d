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
from tiny_models import GroupedAfterConcat, TinyConcatNet, TinyResNet, TinyTransformer


@dataclass(frozen=True)
class ZooModel:
    name: str
    family: str                          # the search-space family file it must match
    build: Callable[[], nn.Module]       # tiny version, for the conformance suite
    kinds: frozenset = frozenset({"stream", "inner"})   # dimension kinds it must offer
    inputs: str = "image"                # "image" (3x32x32) or "tokens"
    full: Callable[[], nn.Module] | None = None          # full width, for the speed table
    full_name: str = ""                  # what `full` builds, when it differs from `name`
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
_FULL_VIT = dict(img_size=64, patch_size=8)

ZOO = [
    ZooModel("timm resnet18", "resnet", _timm("resnet18", channels=(16, 32, 64, 128), stem_width=16),
             full=_timm("resnet18")),
    ZooModel("timm mobilenetv3_small_050", "mobilenetv3", _timm("mobilenetv3_small_050"),
             full=_timm("mobilenetv3_large_100"), full_name="timm mobilenetv3_large_100"),
    ZooModel("timm mobilenetv4_conv_small_050", "mobilenetv3", _timm("mobilenetv4_conv_small_050"),
             full=_timm("mobilenetv4_conv_small"), full_name="timm mobilenetv4_conv_small"),
    ZooModel("timm efficientnet_b0", "efficientnet", _timm("efficientnet_b0"),
             full=_timm("efficientnet_b0")),
    ZooModel("timm convnext_atto (narrow)", "convnext", _timm("convnext_atto", dims=(16, 32, 64, 128)),
             full=_timm("convnext_atto"), full_name="timm convnext_atto"),
    ZooModel("timm regnetx_002", "regnet", _timm("regnetx_002"), full=_timm("regnetx_002")),
    ZooModel("timm DenseNet (growth 8)", "densenet",
             _timm_densenet(growth_rate=8, block_config=(2, 2, 2, 2)),
             kinds=frozenset({"inner"}), full=_timm("densenet121"), full_name="timm densenet121"),
    ZooModel("timm ghostnet_050", "ghostnet", _timm("ghostnet_050"), kinds=frozenset({"inner"}),
             full=_timm("ghostnet_100"), full_name="timm ghostnet_100"),
    ZooModel("timm repvgg_a0", "repvgg", _timm("repvgg_a0"), kinds=frozenset({"stream"}),
             full=_timm("repvgg_a0")),
    ZooModel("timm vit (tiny)", "vit", _timm("vit_tiny_patch16_224", **_TINY_VIT),
             kinds=frozenset({"heads", "inner", "stream"}),
             full=_timm("vit_small_patch16_224", **_FULL_VIT),
             full_name="timm vit_small (64x64, patch 8)"),
    ZooModel("timm deit (tiny)", "vit", _timm("deit_tiny_patch16_224", **_TINY_VIT),
             kinds=frozenset({"heads", "inner", "stream"}),
             full=_timm("deit_tiny_patch16_224", **_FULL_VIT),
             full_name="timm deit_tiny (64x64, patch 8)"),
    ZooModel("torchvision resnet18", "resnet", _torchvision("resnet18"),
             full=_torchvision("resnet18")),
    ZooModel("torchvision mobilenet_v2", "mobilenetv3", _torchvision("mobilenet_v2", width_mult=0.5),
             full=_torchvision("mobilenet_v2"), full_name="torchvision mobilenet_v2 (width 1.0)"),
    ZooModel("torchvision mobilenet_v3_small", "mobilenetv3", _torchvision("mobilenet_v3_small"),
             full=_torchvision("mobilenet_v3_large"), full_name="torchvision mobilenet_v3_large"),
    ZooModel("torchvision efficientnet_b0", "efficientnet", _torchvision("efficientnet_b0"),
             full=_torchvision("efficientnet_b0")),
    ZooModel("custom residual (TinyResNet)", "default", lambda: TinyResNet(num_classes=10)),
    ZooModel("custom concat/grouped/depthwise", "default", lambda: TinyConcatNet(num_classes=10),
             kinds=frozenset({"inner"})),
    ZooModel("HF BERT encoder (from config)", "hf_encoder", _bert(), kinds=frozenset({"heads", "inner"}),
             inputs="tokens", full=_bert(hidden=256, layers=4, heads=4, intermediate=1024),
             full_name="HF BERT 4 layers, hidden 256",
             needs="transformers"),
]


def example_inputs(entry: ZooModel, batch: int, seed: int = 0, size: int = 32,
                   length: int = 12) -> tuple[Any, torch.Tensor]:
    """(inputs, class targets) for one batch: size x size images or `length` tokens."""
    generator = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, 3, (batch,), generator=generator)
    if entry.inputs == "tokens":
        ids = torch.randint(1, 100, (batch, length), generator=generator)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, targets
    return torch.randn(batch, 3, size, size, generator=generator), targets


def _distilbert(dim: int = 32, layers: int = 2, heads: int = 4, hidden: int = 64):
    def build():
        import transformers
        config = transformers.DistilBertConfig(
            vocab_size=100, dim=dim, n_layers=layers, n_heads=heads, hidden_dim=hidden,
            max_position_embeddings=64, num_labels=3)
        return transformers.DistilBertForSequenceClassification(config)
    return build


def _gpt2(hidden: int = 32, layers: int = 2, heads: int = 4, inner: int = 64):
    def build():
        import transformers
        config = transformers.GPT2Config(
            vocab_size=100, n_embd=hidden, n_layer=layers, n_head=heads, n_inner=inner,
            n_positions=64, num_labels=3, pad_token_id=0, attn_implementation="eager")
        return transformers.GPT2ForSequenceClassification(config)
    return build


def _grouped_query(family: str, hidden: int = 64, layers: int = 2, heads: int = 8,
                   kv_heads: int = 2, intermediate: int = 128):
    """A Llama-style decoder (grouped-query attention, SwiGLU) as a sequence classifier."""
    def build():
        import transformers
        config_class, model_class = {
            "llama": (transformers.LlamaConfig, transformers.LlamaForSequenceClassification),
            "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForSequenceClassification),
        }[family]
        config = config_class(vocab_size=100, hidden_size=hidden, intermediate_size=intermediate,
                              num_hidden_layers=layers, num_attention_heads=heads,
                              num_key_value_heads=kv_heads, max_position_embeddings=64,
                              num_labels=3, pad_token_id=0)
        return model_class(config)
    return build


for _family, _label in (("llama", "Llama"), ("qwen2", "Qwen2")):
    ZOO.append(ZooModel(f"HF {_label} decoder, grouped-query (from config)", "hf_llama",
                        _grouped_query(_family), kinds=frozenset({"heads", "inner"}),
                        inputs="tokens", needs="transformers",
                        full=_grouped_query(_family, hidden=256, layers=4, intermediate=768),
                        full_name=f"HF {_label} 4 layers, hidden 256, 8 query / 2 key-value heads"))

ZOO.append(ZooModel("HF DistilBERT encoder (from config)", "hf_encoder", _distilbert(),
                    kinds=frozenset({"heads", "inner"}), inputs="tokens",
                    full=_distilbert(dim=256, layers=4, heads=4, hidden=1024), needs="transformers",
                    full_name="HF DistilBERT 4 layers, dim 256"))
ZOO.append(ZooModel("HF GPT-2 decoder (from config)", "hf_decoder", _gpt2(),
                    kinds=frozenset({"heads", "inner"}), inputs="tokens",
                    full=_gpt2(hidden=256, layers=4, heads=4, inner=1024), needs="transformers",
                    full_name="HF GPT-2 4 layers, hidden 256"))


def _hf_vit(hidden: int = 32, layers: int = 2, heads: int = 4, intermediate: int = 64,
            size: int = 32, patch: int = 8):
    def build():
        import transformers
        config = transformers.ViTConfig(
            image_size=size, patch_size=patch, hidden_size=hidden, num_hidden_layers=layers,
            num_attention_heads=heads, intermediate_size=intermediate, num_labels=10)
        return transformers.ViTForImageClassification(config)
    return build


ZOO.append(ZooModel("HF ViT (from config)", "hf_encoder", _hf_vit(),
                    kinds=frozenset({"heads", "inner"}), needs="transformers",
                    full=_hf_vit(hidden=192, layers=4, heads=3, intermediate=768, size=64),
                    full_name="HF ViT 4 layers, hidden 192 (64x64, patch 8)"))


def _swin():
    import timm
    return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=10,
                             img_size=32, window_size=4, embed_dim=24, depths=(1, 1, 1, 1),
                             num_heads=(1, 2, 2, 4))


def _timm_small(name: str, **kwargs):
    import timm
    return timm.create_model(name, pretrained=False, num_classes=10, **kwargs)


# Model types the pre-flight check refuses today (README: "Not supported yet"). `verdicts()`
# prints its message for each, so the README quotes the check, not a guess.
NOT_SUPPORTED = [
    ("custom block with nn.MultiheadAttention", "image", TinyTransformer),
    ("custom grouped conv inside a concatenation", "image", GroupedAfterConcat),
    ("timm swin (window attention)", "image", _swin),
    ("timm levit_128s", "image", lambda: _timm_small("levit_128s", img_size=32)),
    ("timm mobilevit_xxs", "image", lambda: _timm_small("mobilevit_xxs")),
    ("timm efficientvit_b0", "image", lambda: _timm_small("efficientvit_b0")),
]


def verdicts() -> list[tuple[str, str]]:
    """(model, the pre-flight check's verdict) for each of NOT_SUPPORTED."""
    from autoprune.study.preflight import preflight
    from autoprune.study.prepared import PreparedModel
    from autoprune.study.space import resolve_search_space

    results = []
    for name, kind, build in NOT_SUPPORTED:
        probe = ZooModel(name, "", build, inputs=kind)
        try:
            model = build().eval()
            size = 16 if "MultiheadAttention" in name or "concatenation" in name else 32
            inputs, _ = example_inputs(probe, 4, size=size)
            preflight(PreparedModel.build(model, inputs, resolve_search_space(model, None)))
            verdict = "passes the pre-flight check"
        except Exception as err:  # the verdict is the message, whatever raised it
            verdict = f"{type(err).__name__}: {err}"
        results.append((name, verdict))
        print(f"{name}: {verdict}\n", flush=True)
    return results


def speed_table(batch: int = 32, ratio: float = 0.5, threads: int = 2,
                only: str = "") -> list[dict]:
    """Full-width models at batch `batch`: uniform pruning at `ratio` (capped by each family's
    ranges), latency timed interleaved with the unpruned model, against the MAC reduction.
    `only`: the entries whose name contains it."""
    from autoprune.pruning.conversions import prepare
    from autoprune.pruning.grouping import ignored_modules, plan_dimensions
    from autoprune.pruning.prune import prune_copy
    from autoprune.runtime.measure import count_macs_and_params, interleaved_latency_ms
    from autoprune.study.config import config_from_params, uniform_params
    from autoprune.study.space import resolve_search_space
    from autoprune.targets import get_target

    rows = []
    for entry in ZOO:
        if entry.full is None or (only and only not in entry.name):
            continue
        torch.manual_seed(0)
        model = prepare(entry.full().eval())
        inputs, _ = example_inputs(entry, batch, size=64, length=64)
        space = resolve_search_space(model, None)
        ignored = ignored_modules(model, inputs, space.ignored_layers)
        names = [n for n, m in model.named_modules() if m in ignored]
        dims = plan_dimensions(model, inputs, space.stage_pattern, space.max_dimensions, ignored)
        config = config_from_params(uniform_params(space, dims, ratio), dims, space)
        pruned = prune_copy(model, inputs, dims, config.sparsity, "l2", names, space.round_to).model
        with torch.no_grad():
            base_macs, base_params = count_macs_and_params(model, inputs)
            macs, params = count_macs_and_params(pruned.eval(), inputs)
            times = interleaved_latency_ms({"base": model, "pruned": pruned}, inputs,
                                           get_target("cpu", "cpu", threads), rounds=5,
                                           block_seconds=0.3)
        row = {"model": entry.full_name or entry.name, "family": space.family,
               "base_ms": times["base"], "pruned_ms": times["pruned"],
               "speedup": times["base"] / times["pruned"], "mac_reduction": base_macs / macs,
               "param_reduction": base_params / params}
        rows.append(row)
        print(f"{row['model']:<34} {row['family']:<13} {row['base_ms']:8.1f} {row['pruned_ms']:8.1f}"
              f" {row['speedup']:6.2f}x {row['mac_reduction']:6.2f}x {row['param_reduction']:6.2f}x",
              flush=True)
    return rows


if __name__ == "__main__":
    import json
    import platform
    import sys

    torch.set_num_threads(2)
    if sys.argv[1:2] == ["--verdicts"]:
        verdicts()
        sys.exit(0)
    print(f"batch 32, 64x64 images / 64 tokens, uniform 0.5 capped per family, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(f"{'model':<34} {'family':<13} {'base ms':>8} {'pruned':>8} {'speedup':>7} {'MACs':>7} {'params':>7}")
    only = sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv else ""
    table = speed_table(only=only)
    if len(sys.argv) > 1 and not sys.argv[1].startswith("--"):
        with open(sys.argv[1], "w") as handle:
            json.dump(table, handle, indent=1)
