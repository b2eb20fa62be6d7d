"""Pre-flight check: prune a copy once before trial 1, so an unprunable model fails in seconds.

Torch-Pruning traces most models, but some operations (a reshape with a hard-coded width, an
attention module it does not know) break only once channels are really removed. Rather than
failing every trial of an overnight search, `preflight` prunes a copy with every dimension at
a small ratio, runs it forwards and backwards, and checks that something was really removed.
On failure it retries each dimension alone to name the layers that cannot be pruned.
"""

from __future__ import annotations

from ..errors import InvalidInputError
from ..pruning.depth import DEPTH
from ..pruning.grouping import PruningDimension
from ..runtime.model_io import output_tensors, run_model
from .prepared import PreparedModel
from .space import SearchSpace

PREFLIGHT_RATIO = 0.3


def _ratio(space: SearchSpace, dim: PruningDimension) -> float:
    low, high = space.sparsity[dim.kind]
    return min(max(PREFLIGHT_RATIO, low), high)


def _try(prepared: PreparedModel, sparsity: dict[str, float],
         dimensions: list[PruningDimension]) -> None:
    """Prune a copy at `sparsity` and run it forwards and backwards; raises on any failure."""
    model, example_inputs = prepared.model, prepared.example_inputs
    pruned = prepared.prune(sparsity, dimensions=dimensions).model
    pruned.train()
    outputs = output_tensors(run_model(pruned, example_inputs))
    expected = [t.shape for t in output_tensors(run_model(model, example_inputs))]
    if [t.shape for t in outputs] != expected:
        raise RuntimeError(f"the pruned copy's outputs have shapes {[tuple(t.shape) for t in outputs]}"
                           f", the model's {[tuple(s) for s in expected]}")
    loss = sum(t.float().sum() for t in outputs if t.is_floating_point())
    loss.backward()
    removes = any(value > 0 for value in sparsity.values())
    if removes and (sum(p.numel() for p in pruned.parameters())
                    >= sum(p.numel() for p in model.parameters())):
        raise RuntimeError("pruning removed no parameter (Torch-Pruning found no layer it could cut)")


def preflight(prepared: PreparedModel) -> None:
    """Raise `InvalidInputError` naming the layers that cannot be pruned."""
    dimensions = prepared.dimensions
    sparsity = {dim.name: _ratio(prepared.space, dim) for dim in dimensions}
    if prepared.block_order is not None:  # whole decoder layers too, as deep as allowed
        sparsity[DEPTH] = prepared.space.depth[1]
    model_name = type(prepared.model).__name__
    try:
        _try(prepared, sparsity, dimensions)
    except Exception as err:  # any failure: find which dimensions cause it
        failing = []
        for dim in dimensions:
            if sparsity[dim.name] <= 0:
                continue
            try:
                _try(prepared, {dim.name: sparsity[dim.name]}, [dim])
            except Exception as single:
                layers = dim.members or dim.layers
                failing.append(f"{dim.name} (layers {', '.join(layers[:6])}"
                               f"{', ...' if len(layers) > 6 else ''}): "
                               f"{type(single).__name__}: {str(single)[:300]}")
        where = ("\n  ".join(failing) if failing else
                 f"every dimension prunes alone; together: {type(err).__name__}: {str(err)[:300]}")
        raise InvalidInputError(
            f"pre-flight check: {model_name} cannot be pruned as planned. Pruning a copy with every "
            f"dimension at {PREFLIGHT_RATIO:.0%} failed in\n  {where}\n"
            "Keep those layers unpruned with ignored_layers=[<module-name regex>, ...] "
            "(CLI: --ignore-layer REGEX), or cap their kind's range in a search-space file."
        ) from err
