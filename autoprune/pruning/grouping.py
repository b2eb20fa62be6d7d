"""Group a model's prunable widths into a few search dimensions.

Torch-Pruning's dependency graph yields *groups*: sets of layers whose channels must be
removed together. Each group is either part of a residual **stream** (its width is tied to
other blocks' outputs through an addition: the stem and a stage's skip path), the **heads** of
an attention module (see `attention.py`), or an **inner** width of one block. A search
dimension is one (stage, kind) pair and shares one ratio.

The stage of a layer comes from the family file's `stage_pattern`, or else from the
automatic rule: its module path up to and including the first numeric index
(`layer1.0.conv1` -> `layer1.0`, `blocks.2.1.conv_pw` -> `blocks.2`, `conv_head` ->
`conv_head`). A stream group takes the stage most of its layers are in. If that gives more
than `max_dimensions`, inner dimensions are merged one level up (`layer1.0` -> `layer1`).
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch_pruning as tp

from ..errors import InvalidInputError
from ..runtime.model_io import output_tensors, run_model
from .attention import find_attention
from .grouped_query import grouped_query_attention, output_projection, projection_layers

try:
    import resource
except ImportError:  # not on Windows: nothing is capped there
    resource = None

PRUNABLE_TYPES = (nn.modules.conv._ConvNd, nn.Linear)


@dataclass(frozen=True)
class PruningDimension:
    """One searched ratio: `kind` is "stream", "inner" or "heads"; `layers` are the group roots' names."""

    name: str
    kind: str
    layers: tuple[str, ...]
    channels: int
    members: tuple[str, ...] = ()  # every Conv/Linear whose width changes with it
    consumers: tuple[str, ...] = ()  # every Conv/Linear whose input width changes with it

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "layers": list(self.layers),
                "channels": self.channels}


def output_layer_names(model: nn.Module, example_inputs: Any) -> list[str]:
    """The last Conv/Linear to run in a forward pass: it produces the outputs, so it is kept."""
    order: list[str] = []
    hooks = [module.register_forward_hook(lambda mod, args, out, name=name: order.append(name))
             for name, module in model.named_modules() if isinstance(module, PRUNABLE_TYPES)]
    try:
        with torch.no_grad():
            run_model(model, example_inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return order[-1:]


def ignored_modules(model: nn.Module, example_inputs: Any, patterns) -> list[nn.Module]:
    """Modules never pruned: the output layer and every module whose name matches a regex."""
    keep = set(output_layer_names(model, example_inputs))
    compiled = [re.compile(p) for p in patterns]
    return [module for name, module in model.named_modules()
            if name in keep or (name and any(p.search(name) for p in compiled))]


@contextlib.contextmanager
def unwrapped_parameters_quiet():
    """Torch-Pruning warns, on every trace, about each parameter outside a layer type it
    knows (a Llama RMSNorm weight, a ViT position embedding) and then does what it says:
    the parameter follows the channels of its last dimension. Nothing a user can act on,
    printed once per trial."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Unwrapped parameters detected")
        yield


def build_graph(model: nn.Module, example_inputs: Any) -> tp.DependencyGraph:
    with unwrapped_parameters_quiet():
        return tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs,
                                                     output_transform=output_tensors)


# What Torch-Pruning was doing when it failed, in words a user can act on (its function names).
_TRACE_STEPS = {
    "update_reshape_index_mapping": "a reshape or view that moves channels into another "
                                    "dimension (a channel shuffle, as in ShuffleNet)",
    "update_concat_index_mapping": "a concatenation whose inputs' widths it cannot infer "
                                   "(DPN's dual paths concatenate slices of one tensor)",
    "update_split_index_mapping": "a split of the channels into parts",
    "update_slice_index_mapping": "a slice of the channels",
}
RECURSION_WARNING = "Maximum recursive depth reached!"
ANALYSIS_MEMORY = 1 << 30  # bytes the analysis may add to the process (CPU models) ...
ANALYSIS_SECONDS = 30.0    # ... and how long it may take before the cap closes on it


def _address_space() -> int | None:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


@contextlib.contextmanager
def _memory_bounded(model: nn.Module):
    """Cap the process's address space at its size now plus `ANALYSIS_MEMORY` (or four times
    the model, if larger), and after `ANALYSIS_SECONDS` at its size then: Torch-Pruning's
    index mappings can grow without end (torchvision's Swin-T reached 24 GB), and a
    MemoryError is a refusal where the kernel's OOM killer is a lost workstation. Linux and
    CPU models only; elsewhere nothing is capped. Yields the allowance in bytes."""
    current = _address_space()
    on_cpu = all(p.device.type == "cpu" for p in model.parameters())
    size = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    allowance = max(ANALYSIS_MEMORY, 4 * size)
    if current is None or not on_cpu or resource is None:
        yield allowance
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)

    def capped(limit: int) -> int:
        for bound in (soft, hard):
            if bound != resource.RLIM_INFINITY:
                limit = min(limit, bound)
        return limit

    def close_in() -> None:  # time is up: no more growth from here
        resource.setrlimit(resource.RLIMIT_AS, (capped(_address_space() or current), hard))

    resource.setrlimit(resource.RLIMIT_AS, (capped(current + allowance), hard))
    timer = threading.Timer(ANALYSIS_SECONDS, close_in)
    timer.daemon = True
    timer.start()
    try:
        yield allowance
    finally:
        timer.cancel()
        timer.join()
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _failed_step(err: BaseException) -> str | None:
    names = []
    tb = err.__traceback__
    while tb is not None:
        names.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    return next((_TRACE_STEPS[name] for name in reversed(names) if name in _TRACE_STEPS), None)


_ADVICE = ("ignored_layers cannot help: Torch-Pruning traces the whole model before any "
           "layer is left out. The README lists the models autoprune supports and those it "
           "refuses.")


@contextlib.contextmanager
def _torch_pruning_refusals(model: nn.Module):
    """Turn a failure inside Torch-Pruning's analysis into an `InvalidInputError` saying what
    it was tracing, with its memory bounded (`_memory_bounded`)."""
    model_name = type(model).__name__
    allowance = ANALYSIS_MEMORY
    try:
        with _memory_bounded(model) as allowance:
            yield
    except InvalidInputError:
        raise
    except (MemoryError, RuntimeError) as err:
        if not isinstance(err, MemoryError) and "can't allocate memory" not in str(err):
            raise _not_traced(model_name, err) from err
        raise InvalidInputError(
            f"Torch-Pruning's dependency analysis of {model_name} needed more than "
            f"{allowance / 2**30:.1f} GiB beyond what the process held, or more than "
            f"{ANALYSIS_SECONDS:.0f} s, and was stopped. "
            f"{_ADVICE}") from None
    except Exception as err:  # anything inside Torch-Pruning: say what it was tracing
        raise _not_traced(model_name, err) from err


def _not_traced(model_name: str, err: Exception) -> InvalidInputError:
    step = _failed_step(err)
    return InvalidInputError(
        f"Torch-Pruning cannot trace {model_name}'s channel dependencies: it failed"
        f"{f' at {step}' if step else ''} ({type(err).__name__}: {str(err)[:200]}). {_ADVICE}")


def traced_graph(model: nn.Module, example_inputs: Any) -> tp.DependencyGraph:
    """Torch-Pruning's dependency graph of `model`, or an `InvalidInputError` saying why it
    cannot be had: an exception inside Torch-Pruning, or its shape inference running past
    its recursion limit (the index mappings it then builds grow without bound)."""
    with _torch_pruning_refusals(model), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graph = build_graph(model, example_inputs)
    loops = sum(str(w.message) == RECURSION_WARNING for w in caught)
    if loops:
        raise InvalidInputError(
            f"Torch-Pruning cannot trace {type(model).__name__}'s channel dependencies: its "
            f"shape inference ran past its recursion limit {loops} times (it does on "
            "torchvision's shifted-window attention, Swin-T), and the groups it would build "
            f"from there grow without bound. {_ADVICE}")
    for w in caught:  # the others, shown as they would have been
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return graph


def layers_feeding_channel_splits(graph: tp.DependencyGraph) -> list[nn.Module]:
    """The Conv/Linear layers whose outputs reach a split of dimension 1 (the channels).

    Torch-Pruning maps a removed channel to the wrong part of such a split (on timm's MixNet
    it removed the first part's channel 0 from the second part's convolution), and a module
    that splits by a size it stores (CSPNet's `split(expand_chs // 2)`, MixNet's
    `MixedConv2d.splits`) would keep the old sizes. Keeping these layers' widths keeps every
    group away from the split; the rest of the model is still searched."""
    feeders: list[nn.Module] = []
    for node in graph.module2node.values():
        if node.type != tp.ops.OPTYPE.SPLIT or getattr(node.grad_fn, "_saved_dim", 1) != 1:
            continue
        stack, seen = list(node.inputs), set()
        while stack:
            upstream = stack.pop()
            if id(upstream) in seen:
                continue
            seen.add(id(upstream))
            if isinstance(upstream.module, PRUNABLE_TYPES):
                if upstream.module not in feeders:
                    feeders.append(upstream.module)
            else:
                stack.extend(upstream.inputs)
    return feeders


def _is_residual_group(group) -> bool:
    # Torch-Pruning represents additions as _ElementWiseOp nodes named after the autograd op.
    return any(isinstance(dep.target.module, tp.ops._ElementWiseOp)
               and "AddBackward" in repr(dep.target.module) for dep, _ in group)


def stage_of(name: str, stage_pattern: str | None) -> str:
    """The stage a layer belongs to (see the module docstring for the rule)."""
    if stage_pattern:
        match = re.search(stage_pattern, name)
        if match:
            return match.group(1)
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[: i + 1])
    return parts[0]


def _parent_stage(stage: str) -> str:
    parts = stage.split(".")
    return ".".join(parts[:-1]) if len(parts) > 1 and parts[-1].isdigit() else stage


def plan_dimensions(model: nn.Module, example_inputs: Any, stage_pattern: str | None = None,
                    max_dimensions: int = 24, ignored: list[nn.Module] | None = None,
                    graph: tp.DependencyGraph | None = None) -> list[PruningDimension]:
    """The search dimensions of `model`, in forward order; empty if nothing can be pruned."""
    names = {module: name for name, module in model.named_modules()}
    projections = {name for attention in find_attention(model) for name in attention.projections}
    graph = graph or traced_graph(model, example_inputs)
    with _torch_pruning_refusals(model):
        groups = list(graph.get_all_groups(ignored_layers=(ignored or []) + projection_layers(model),
                                           root_module_types=list(PRUNABLE_TYPES)))
    entries = []  # (stage, kind, roots, channels)
    for group in groups:
        layers = [names[dep.target.module] for dep, _ in group
                  if isinstance(dep.target.module, PRUNABLE_TYPES)
                  and graph.is_out_channel_pruning_fn(dep.handler)]
        if not layers:
            continue
        consumers = [names[dep.target.module] for dep, _ in group
                     if isinstance(dep.target.module, PRUNABLE_TYPES)
                     and graph.is_in_channel_pruning_fn(dep.handler)]
        root = group[0][0].target.module
        if projections.intersection(layers):
            kind = "heads"  # attention projections: whole heads are removed
        elif len(layers) > 1 and _is_residual_group(group):
            # an addition joining several layers' outputs; one layer's own adds (GELU's
            # tanh approximation) do not make a stream
            kind = "stream"
        else:
            kind = "inner"
        stages = Counter(stage_of(layer, stage_pattern) for layer in layers)
        stage = stages.most_common(1)[0][0] if kind == "stream" else stage_of(names[root], stage_pattern)
        channels = graph.get_out_channels(root)
        entries.append([stage, kind, names[root], channels, layers, consumers])
    ignored_names = {names[module] for module in ignored or [] if module in names}
    for attention in grouped_query_attention(model):  # cut whole (grouped_query.py)
        root = attention.projections[len(attention.projections) // 2]  # k_proj, or c_attn
        if ignored_names.isdisjoint(attention.projections):
            entries.append([stage_of(root, stage_pattern), "heads", root,
                            dict(model.named_modules())[root].out_features,
                            list(attention.projections), [output_projection(attention)]])

    def collect():
        dims: dict[str, list] = {}
        for stage, kind, root, channels, layers, consumers in entries:
            dim = dims.setdefault(f"{stage}.{kind}", [kind, [], 0, set(), set()])
            dim[1].append(root)
            dim[2] += channels or 0
            dim[3].update(layers)
            dim[4].update(consumers)
        return dims

    dims = collect()
    while len(dims) > max_dimensions:
        before = len(dims)
        for entry in entries:
            if entry[1] != "stream":
                entry[0] = _parent_stage(entry[0])
        dims = collect()
        if len(dims) == before:
            break
    order = {name: i for i, name in enumerate(names.values())}
    planned = [PruningDimension(name, kind, tuple(sorted(roots, key=order.get)), channels,
                                tuple(sorted(members, key=order.get)),
                                tuple(sorted(consumers, key=order.get)))
               for name, (kind, roots, channels, members, consumers) in dims.items()]
    return sorted(planned, key=lambda dim: order[dim.layers[0]])


def check_prunable(dimensions: list[PruningDimension], model_name: str) -> None:
    if not dimensions:
        raise InvalidInputError(
            f"{model_name} has no prunable layer: every Conv/Linear is ignored or feeds the output "
            "directly. Check `ignored_layers` and the search space's grouping.ignored_layers."
        )
