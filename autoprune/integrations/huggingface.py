"""HuggingFace transformers: save a pruned model with `save_pretrained`, load it back.

A transformers config has one head count and one intermediate size for all layers, and
derives the head size from them; a pruned model has its own per layer. `save_pretrained`
writes the usual directory (config.json + model.safetensors) and records every Linear
layer's shape and every attention module's head count in the config under
`autoprune_shapes`; `from_pretrained` builds the model from the config, resizes those layers,
and loads the weights with safetensors. When the pruning kept every head and left one
intermediate size for all layers, the config alone describes it (`intermediate_size` is
updated) and plain `AutoModel*.from_pretrained` loads it too.

Needs the optional extra: `pip install 'autoprune[hf]'`.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch.nn as nn

from ..errors import CheckpointError
from ..pruning.attention import find_attention, head_count, sync_heads
from ..pruning.conversions import to_conv1d

SHAPES_KEY = "autoprune_shapes"
WEIGHTS = "model.safetensors"


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ImportError("autoprune.integrations.huggingface needs transformers: pip install 'autoprune[hf]'") from None
    return transformers


def _is_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D"


def describe_shapes(model: nn.Module) -> dict:
    """Every Linear's and Conv1D's [in, out, bias] and every attention module's head count."""
    return {
        "linear": {name: [m.in_features, m.out_features, m.bias is not None]
                   for name, m in model.named_modules() if isinstance(m, nn.Linear)},
        "conv1d": {name: [m.nx, m.nf, True] for name, m in model.named_modules() if _is_conv1d(m)},
        "heads": {a.name: head_count(model, a) for a in find_attention(model)},
    }


# Where each architecture keeps its MLP hidden layer, and the config field sizing it.
_INTERMEDIATE = ((".intermediate", "dense", "intermediate_size"), (".mlp", "c_fc", "n_inner"),
                 (".ffn", "lin1", "hidden_dim"), (".mlp", "up_proj", "intermediate_size"))


def _uniform_intermediate(model: nn.Module) -> tuple[str, int] | None:
    """(config field, width) when every layer's MLP hidden width is the same, else None."""
    for suffix, child, field in _INTERMEDIATE:
        layers = [getattr(m, child) for name, m in model.named_modules()
                  if name.endswith(suffix) and hasattr(m, child)]
        widths = {layer.out_features if isinstance(layer, nn.Linear) else layer.nf for layer in layers}
        if len(widths) == 1:
            return field, widths.pop()
    return None


def save_pretrained(model: nn.Module, directory: str | Path, **kwargs) -> Path:
    """`model.save_pretrained(directory)` with the pruned shapes recorded in its config."""
    directory = Path(directory)
    model = to_conv1d(copy.deepcopy(model))  # GPT-2: back to transformers' own layout
    config = model.config = copy.deepcopy(model.config)
    setattr(config, SHAPES_KEY, describe_shapes(model))
    intermediate = _uniform_intermediate(model)
    if intermediate is not None:
        setattr(config, *intermediate)
    model.save_pretrained(directory, safe_serialization=True, **kwargs)
    return directory


def _resize(model: nn.Module, shapes: dict) -> None:
    """Replace every layer whose recorded shape differs; the weights are loaded afterwards."""
    from transformers.pytorch_utils import Conv1D

    modules = dict(model.named_modules())
    layers = [(name, shape, False) for name, shape in shapes["linear"].items()]
    layers += [(name, shape, True) for name, shape in shapes.get("conv1d", {}).items()]
    for name, (in_features, out_features, bias), conv1d in layers:
        if name not in modules:
            raise CheckpointError(f"layer {name!r} in {SHAPES_KEY} is not in {type(model).__name__}")
        layer = modules[name]
        now = (layer.nx, layer.nf) if conv1d else (layer.in_features, layer.out_features)
        if now != (in_features, out_features):
            new = (Conv1D(out_features, in_features) if conv1d
                   else nn.Linear(in_features, out_features, bias=bias))
            parent_name, _, child = name.rpartition(".")
            setattr(modules[parent_name] if parent_name else model, child,
                    new.to(layer.weight.device, layer.weight.dtype))
    heads = sync_heads(model)
    if heads != shapes["heads"]:
        raise CheckpointError(f"head counts after resizing {heads} differ from the recorded "
                              f"{shapes['heads']}")


def _in_memory_names(model: nn.Module, saved: dict) -> dict:
    """`saved` with the model's own parameter names. transformers 5 renames some modules in
    memory (ViT's `attention.attention.query` is `attention.q_proj`) and writes the old names
    on save; its loader renames them back, which loading into a resized model here bypasses.
    The model's own save-side renaming maps each in-memory tensor to its saved name: pure
    renamings keep the tensor, which pairs the names."""
    own = model.state_dict()
    if set(saved) <= set(own):
        return saved
    try:
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:  # transformers 4 saves the in-memory names
        return saved
    in_memory = {tensor.data_ptr(): name for name, tensor in own.items()}
    renamed = {}
    for saved_name, tensor in revert_weight_conversion(model, dict(own)).items():
        name = in_memory.get(tensor.data_ptr())
        if name is not None and saved_name in saved:
            renamed[name] = saved[saved_name]
    return {**{k: v for k, v in saved.items() if k in own}, **renamed}


def from_pretrained(directory: str | Path, model_class=None, **kwargs) -> nn.Module:
    """Load a model written by `save_pretrained` (pruned or not); `model_class` defaults to
    the config's first `architectures` entry."""
    transformers = _transformers()
    from safetensors.torch import load_file

    directory = Path(directory)
    config = transformers.AutoConfig.from_pretrained(directory, **kwargs)
    shapes = getattr(config, SHAPES_KEY, None)
    if model_class is None:
        if not config.architectures:
            raise CheckpointError(f"{directory}/config.json names no architecture; pass model_class=")
        model_class = getattr(transformers, config.architectures[0])
    if shapes is None:
        return model_class.from_pretrained(directory, config=config)
    model = model_class(config)
    _resize(model, shapes)
    weights = directory / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{weights}: weights file is missing")
    missing, unexpected = model.load_state_dict(_in_memory_names(model, load_file(str(weights))),
                                                strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    missing = [key for key in missing if key not in tied]
    if missing or unexpected:
        raise CheckpointError(f"{weights} does not fit {model_class.__name__}: missing "
                              f"{missing[:5]}, unexpected {unexpected[:5]}")
    return model.eval()
