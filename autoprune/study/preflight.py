"""Pre-flight check: prune a copy once before trial 1, so an unprunable model fails in seconds.

Torch-Pruning traces most models, but some operations (a reshape with a hard-coded width, an
attention module it does not know) break only once channels are really removed. Rather than
failing every trial of an overnight search, `preflight` prunes a copy with every dimension at
a small ratio, runs it forwards and backwards, and checks that something was really removed.
On failure it retries each dimension alone to name the layers that cannot be pruned.
"""

from __future__ import annotations

import re
import time

import torch

from ..errors import InvalidInputError
from ..pruning.depth import DEPTH
from ..pruning.grouping import PRUNABLE_TYPES, PruningDimension
from ..runtime.model_io import output_tensors, run_model
from .prepared import PreparedModel
from .space import SearchSpace

PREFLIGHT_RATIO = 0.3
RETRY_SECONDS = 15  # for trying dimensions alone after a failure: big models name fewer


def _ratio(space: SearchSpace, dim: PruningDimension) -> float:
    low, high = space.sparsity[dim.kind]
    return min(max(PREFLIGHT_RATIO, low), high)


def _try(prepared: PreparedModel, sparsity: dict[str, float],
         dimensions: list[PruningDimension]) -> None:
    """Prune a copy at `sparsity` and run it forwards and backwards; raises on any failure."""
    model, example_inputs = prepared.model, prepared.example_inputs
    pruned = prepared.prune(sparsity, dimensions=dimensions).model
    expected = [t.shape for t in output_tensors(run_model(model, example_inputs))]
    with torch.no_grad():  # compared in eval mode, as the model is: GoogLeNet adds outputs in training
        shapes = [t.shape for t in output_tensors(run_model(pruned.eval(), example_inputs))]
    if shapes != expected:
        raise RuntimeError(f"the pruned copy's outputs have shapes {[tuple(s) for s in shapes]}"
                           f", the model's {[tuple(s) for s in expected]}")
    pruned.train()
    outputs = output_tensors(run_model(pruned, example_inputs))
    loss = sum(t.float().sum() for t in outputs if t.is_floating_point())
    loss.backward()
    removes = any(value > 0 for value in sparsity.values())
    if removes and (sum(p.numel() for p in pruned.parameters())
                    >= sum(p.numel() for p in model.parameters())):
        raise RuntimeError("pruning removed no parameter (Torch-Pruning found no layer it could cut)")


def _failing_alone(prepared: PreparedModel, sparsity: dict[str, float],
                   dimensions: list[PruningDimension]) -> tuple[list, int]:
    """The dimensions that fail pruned on their own, found by halving the set that failed (a
    part that prunes is not split further), so a big model is refused in seconds; and how
    many were left untried when `RETRY_SECONDS` ran out."""
    deadline = time.monotonic() + RETRY_SECONDS
    active = [dim for dim in dimensions if sparsity[dim.name] > 0]
    pending = [active[: len(active) // 2], active[len(active) // 2:]] if len(active) > 1 else [active]
    failing, untried = [], 0
    while pending:
        part = pending.pop(0)
        if not part:
            continue
        if time.monotonic() > deadline:
            untried += len(part)
            continue
        try:
            _try(prepared, {dim.name: sparsity[dim.name] for dim in part}, part)
        except Exception as err:
            if len(part) == 1:
                failing.append((part[0], err))
            else:
                pending += [part[: len(part) // 2], part[len(part) // 2:]]
    order = {dim.name: i for i, dim in enumerate(dimensions)}
    return sorted(failing, key=lambda found: order[found[0].name]), untried


def ignore_patterns(layers: list[str], model_layers: list[str]) -> list[str]:
    """Regular expressions for `ignored_layers` matching `layers` and no other of
    `model_layers`: names that differ only in some numbers share one pattern (`\\d+` where
    they differ), where that pattern matches nothing else; the others are matched exactly."""
    chosen, shapes = set(layers), {}
    for name in layers:
        shapes.setdefault(re.sub(r"\d+", "#", name), []).append(name)
    patterns = []
    for shape, names in shapes.items():
        numbers = list(zip(*(re.findall(r"\d+", name) for name in names)))
        parts = re.escape(shape).split("\\#" if "\\#" in re.escape(shape) else "#")
        pattern = parts[0] + "".join(
            (values[0] if len(set(values)) == 1 else r"\d+") + part
            for values, part in zip(numbers, parts[1:]))
        pattern = f"^{pattern}$"
        if len(names) > 1 and {n for n in model_layers if re.search(pattern, n)} <= chosen:
            patterns.append(pattern)
        else:
            patterns += [f"^{re.escape(name)}$" for name in names]
    return patterns


def preflight(prepared: PreparedModel) -> None:
    """Raise `InvalidInputError` naming the layers that cannot be pruned and how to leave
    them out."""
    dimensions = prepared.dimensions
    sparsity = {dim.name: _ratio(prepared.space, dim) for dim in dimensions}
    if prepared.block_order is not None:  # whole decoder layers too, as deep as allowed
        sparsity[DEPTH] = prepared.space.depth[1]
    model_name = type(prepared.model).__name__
    try:
        _try(prepared, sparsity, dimensions)
    except Exception as err:  # any failure: find which dimensions cause it
        found, untried = _failing_alone(prepared, sparsity, dimensions)
        failing = []
        for dim, single in found:
            layers = dim.members or dim.layers
            failing.append(f"{dim.name} (layers {', '.join(layers[:6])}"
                           f"{', ...' if len(layers) > 6 else ''}): "
                           f"{type(single).__name__}: {str(single)[:300]}")
        if untried:
            failing.append(f"({untried} dimensions not tried alone: the check stops after "
                           f"{RETRY_SECONDS} s)")
        where = ("\n  ".join(failing) if found else
                 f"every dimension prunes alone; together: {type(err).__name__}: {str(err)[:300]}")
        fix = "ignored_layers=[<module-name regex>, ...]"
        if found:
            model_layers = [name for name, module in prepared.model.named_modules()
                            if isinstance(module, PRUNABLE_TYPES)]
            patterns = ignore_patterns([layer for dim, _ in found for layer in dim.layers],
                                       model_layers)
            fix = f"ignored_layers={patterns!r}"
        raise InvalidInputError(
            f"pre-flight check: {model_name} cannot be pruned as planned. Pruning a copy with every "
            f"dimension at {PREFLIGHT_RATIO:.0%} failed in\n  {where}\n"
            f"Keep those layers unpruned with {fix} (CLI: --ignore-layer REGEX for each), or cap "
            "their kind's range in a search-space file."
        ) from err
