"""A latency model: a configuration's latency predicted in microseconds, without pruning it.

Built once per search and target, before the first trial, in two steps:

1. **A lookup table per layer.** Every Conv/Linear whose input or output width a search
   dimension changes is rebuilt on its own at a ladder of kept widths (the widths
   Torch-Pruning would keep, `round_to` respected) and timed on its recorded input shape, all
   of one layer's variants interleaved. A configuration's layer widths follow from the
   dimensions' ratios, so its table time is a sum of bilinear look-ups.
2. **A calibration on whole models.** What the table leaves out (normalisations,
   activations, additions, framework overhead, fused kernels) is fitted from a few pruned
   copies timed against the unpruned model (paired): relative latency =
   a + b * (table time relative to unpruned) + c * (output elements relative to unpruned),
   least squares with b, c >= 0, leaving out a point far off the fit of the others (a
   reading caught by a burst of load on a shared machine). Where whole decoder layers may be
   removed (depth.py), the layers of the removed blocks leave the table and the elements, and
   a third term, d * (share of blocks kept), carries what else each block costs (attention,
   normalisations, per-layer overhead).

Predictions are relative to the unpruned model, so they are applied to the study's reference
latency just like a trial's measured speedup. The model is plain data (`to_dict`), stored with
the study: a worker joining later and a resumed study use the same table.
"""

from __future__ import annotations

import bisect
import itertools
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn as nn

from ..pruning.attention import find_attention, head_count
from ..pruning.depth import DEPTH, removed_blocks
from ..pruning.grouping import PruningDimension
from ..targets.base import Target
from .model_io import run_hooked

LADDER = (0.0, 0.25, 0.5, 0.75, 0.9)  # ratios at which each layer is timed


def kept_width(channels: int, ratio: float, round_to: int | None = None,
               heads: int | None = None) -> int:
    """The width Torch-Pruning keeps of `channels` at `ratio` (whole heads for attention)."""
    if ratio <= 0:
        return channels
    if heads:
        kept_heads = max(1, heads - math.ceil(ratio * heads))
        return channels * kept_heads // heads
    kept = int(channels * (1 - ratio))
    if round_to:
        kept -= kept % round_to
    return kept if kept > 0 else channels  # Torch-Pruning leaves a group it would empty whole


@dataclass
class LayerTable:
    """One layer's times over a grid of (input width, output width)."""

    name: str
    out_dim: str | None           # the dimension changing its output width (None: fixed)
    in_dim: str | None            # ... its input width
    out_channels: int
    in_channels: int
    depthwise: bool               # input width follows the output width
    out_widths: list[int]         # ascending
    in_widths: list[int]
    ms: list[list[float]]         # [input index][output index]
    elements_per_channel: int     # output elements per output channel (batch x positions)

    def lookup(self, in_width: float, out_width: float) -> float:
        """Bilinear interpolation in the grid, held at its edges."""
        i0, i1, ti = _bracket(self.in_widths, in_width)
        o0, o1, to = _bracket(self.out_widths, out_width)
        low = self.ms[i0][o0] * (1 - to) + self.ms[i0][o1] * to
        high = self.ms[i1][o0] * (1 - to) + self.ms[i1][o1] * to
        return low * (1 - ti) + high * ti


def _bracket(widths: list[int], value: float) -> tuple[int, int, float]:
    if len(widths) == 1 or value <= widths[0]:
        return 0, 0, 0.0
    if value >= widths[-1]:
        return len(widths) - 1, len(widths) - 1, 0.0
    upper = bisect.bisect_left(widths, value)
    lower = upper - 1
    return lower, upper, (value - widths[lower]) / (widths[upper] - widths[lower])


@dataclass
class LatencyModel:
    """Predicts latency relative to the unpruned model from per-dimension ratios."""

    target: str
    round_to: int | None
    heads: dict[str, int]                     # heads dimension -> head count
    layers: list[LayerTable]
    coefficients: tuple[float, ...] = (0.0, 1.0, 0.0)  # a, b, c[, d] (module docstring)
    calibration: list[dict] = field(default_factory=list)  # {"sparsity", "measured", "predicted"}
    build_seconds: float = 0.0
    reference_ms: list[float] = field(default_factory=list)  # the unpruned model's readings
    # in the calibration's paired timings, spread over the build
    blocks: list[str] = field(default_factory=list)  # decoder layers, in removal order

    def _removed_prefixes(self, sparsity: dict[str, float]) -> tuple[str, ...]:
        count = removed_blocks(len(self.blocks), float(sparsity.get(DEPTH, 0.0)))
        return tuple(f"{block}." for block in self.blocks[:count])

    def _kept(self, channels: int, dim: str | None, sparsity: dict[str, float]) -> int:
        if dim is None:
            return channels
        return kept_width(channels, float(sparsity.get(dim, 0.0)), self.round_to,
                          self.heads.get(dim))

    def widths(self, sparsity: dict[str, float]) -> dict[str, tuple[int, int]]:
        """(input width, output width) of every tabled layer at `sparsity`."""
        widths = {}
        for layer in self.layers:
            out_width = self._kept(layer.out_channels, layer.out_dim, sparsity)
            in_width = out_width if layer.depthwise else self._kept(layer.in_channels,
                                                                    layer.in_dim, sparsity)
            widths[layer.name] = (in_width, out_width)
        return widths

    def features(self, sparsity: dict[str, float]) -> tuple[float, float]:
        """(table milliseconds, output elements) of the tabled layers at `sparsity` (those of
        removed decoder layers left out)."""
        table = elements = 0.0
        removed = self._removed_prefixes(sparsity)
        for layer, (in_width, out_width) in zip(self.layers, self.widths(sparsity).values()):
            if removed and layer.name.startswith(removed):
                continue
            table += layer.lookup(in_width, out_width)
            elements += layer.elements_per_channel * out_width
        return table, elements

    def relative_features(self, sparsity: dict[str, float]) -> tuple[float, ...]:
        """The calibration's features: table time and output elements relative to the
        unpruned model's, and the share of decoder layers kept where depth is searched."""
        table, elements = self.features(sparsity)
        base_table, base_elements = self.features({})
        features = (table / max(base_table, 1e-12), elements / max(base_elements, 1e-12))
        if self.blocks:
            features += (1 - len(self._removed_prefixes(sparsity)) / len(self.blocks),)
        return features

    def relative(self, sparsity: dict[str, float]) -> float:
        """Predicted latency at `sparsity` as a fraction of the unpruned model's."""
        return max(1e-3, _predict(self.coefficients, self.relative_features(sparsity)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LatencyModel":
        data = dict(data)
        data["layers"] = [LayerTable(**layer) for layer in data["layers"]]
        data["coefficients"] = tuple(data["coefficients"])
        return cls(**data)


def _layer_inputs(model: nn.Module, inputs: Any, names: set[str]) -> dict[str, tuple]:
    """The shape of each named layer's input and output in one forward pass."""
    shapes: dict[str, tuple] = {}
    modules = dict(model.named_modules())

    def record(name: str):
        def hook(module, args, out) -> None:  # returns None: the output stays as it is
            shapes.setdefault(name, (tuple(args[0].shape), tuple(out.shape)))
        return hook

    run_hooked(model, inputs, [modules[name].register_forward_hook(record(name))
                               for name in names if name in modules])
    return shapes


def _variant(module: nn.Module, in_width: int, out_width: int, depthwise: bool) -> nn.Module:
    """A fresh layer like `module` with other widths (weights are random: time only)."""
    if isinstance(module, nn.Linear):
        return nn.Linear(in_width, out_width, bias=module.bias is not None)
    groups = in_width if depthwise else module.groups
    return type(module)(in_width, out_width, module.kernel_size, stride=module.stride,
                        padding=module.padding, dilation=module.dilation, groups=groups,
                        bias=module.bias is not None, padding_mode=module.padding_mode)


def _monotone(grid: dict[tuple[int, int], float], rows: int, columns: int) -> None:
    """Make a wider variant at least as slow as every narrower one, in place: timing noise on
    a layer of microseconds must not teach the search that widening a layer pays."""
    for i in range(rows):
        for o in range(columns):
            grid[(i, o)] = max([grid[(i, o)]] + ([grid[(i - 1, o)]] if i else []) +
                               ([grid[(i, o - 1)]] if o else []))


def _ladder(channels: int, dim: str | None, round_to: int | None, heads: dict[str, int],
            multiple: int = 1) -> list[int]:
    if dim is None:
        return [channels]
    widths = {kept_width(channels, ratio, round_to, heads.get(dim)) for ratio in LADDER}
    return sorted({max(multiple, w - w % multiple) for w in widths})


def _tabled_layers(model: nn.Module, dimensions: list[PruningDimension]
                   ) -> dict[str, tuple[str | None, str | None]]:
    """Layer name -> (dimension of its output width, dimension of its input width)."""
    governed: dict[str, list] = {}
    for dim in dimensions:
        for name in dim.members:
            governed.setdefault(name, [None, None])[0] = dim.name
        for name in dim.consumers:
            entry = governed.setdefault(name, [None, None])
            entry[1] = entry[1] or dim.name
    modules = dict(model.named_modules())
    return {name: tuple(dims) for name, dims in governed.items()
            if isinstance(modules.get(name), (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))}


def head_counts(model: nn.Module, dimensions: list[PruningDimension]) -> dict[str, int]:
    """Heads dimension -> head count of the attention its projections belong to."""
    by_projection = {name: head_count(model, attention) for attention in find_attention(model)
                     for name in attention.projections}
    return {dim.name: by_projection[dim.layers[0]] for dim in dimensions
            if dim.kind == "heads" and dim.layers and dim.layers[0] in by_projection}


def time_layers(model: nn.Module, inputs: Any, dimensions: list[PruningDimension],
                target: Target, round_to: int | None, rounds: int = 3,
                block_seconds: float = 0.004, on_layer: Callable[[], None] | None = None
                ) -> LatencyModel:
    """Step 1 of the module docstring: the lookup tables of every governed layer."""
    heads = head_counts(model, dimensions)
    governed = _tabled_layers(model, dimensions)
    shapes = _layer_inputs(model, inputs, set(governed))
    modules = dict(model.named_modules())
    layers = []
    for name, (out_dim, in_dim) in governed.items():
        if name not in shapes:  # never runs in the forward pass
            continue
        module = modules[name]
        in_shape, out_shape = shapes[name]
        linear = isinstance(module, nn.Linear)
        in_channels = module.in_features if linear else module.in_channels
        out_channels = module.out_features if linear else module.out_channels
        depthwise = not linear and module.groups > 1 and module.groups == in_channels
        multiple = 1 if linear or depthwise else module.groups
        out_widths = _ladder(out_channels, out_dim, round_to, heads, multiple)
        in_widths = [0] if depthwise else _ladder(in_channels, in_dim, round_to, heads, multiple)
        device = next(module.parameters()).device
        runnables, grid = {}, {}
        for i, in_width in enumerate(in_widths):
            for o, out_width in enumerate(out_widths):
                width = out_width if depthwise else in_width
                variant = _variant(module, width, out_width, depthwise).to(device).eval()
                shape = list(in_shape)
                shape[-1 if linear else 1] = width
                x = torch.randn(shape, device=device)
                runnables[(i, o)] = target.runnable(variant, x)
        samples = target.time_interleaved(runnables, rounds, block_seconds, warmup=1)
        for key, values in samples.items():
            grid[key] = statistics.median(values)
        _monotone(grid, len(in_widths), len(out_widths))
        elements = math.prod(out_shape) // out_shape[-1 if linear else 1]
        layers.append(LayerTable(
            name, out_dim, None if depthwise else in_dim, out_channels, in_channels, depthwise,
            out_widths, in_widths if not depthwise else [out_widths[-1]],
            [[grid[(i, o)] for o in range(len(out_widths))] for i in range(len(in_widths))],
            elements))
        if on_layer is not None:
            on_layer()
    return LatencyModel(target.name, round_to, heads, layers)


def _predict(coefficients: tuple[float, ...], features: tuple[float, ...]) -> float:
    """a + b x1 + c x2 [+ d x3]; models stored before the depth term have no d."""
    return coefficients[0] + sum(slope * x for slope, x in zip(coefficients[1:], features))


def _fit_nonnegative_slopes(features: list[tuple[float, ...]], targets: list[float],
                            weights: list[float]) -> tuple[float, ...]:
    """Weighted least squares of y = a + b x1 + c x2 [+ d x3] with non-negative slopes: every
    subset of the slopes is solved and the best fit with non-negative slopes wins. (NumPy, not
    torch: it runs dozens of tiny solves per trial, see study/latency.recalibrated.)"""
    root = np.sqrt(np.asarray(weights, dtype=np.float64))[:, None]
    x = np.asarray(features, dtype=np.float64).reshape(len(targets), -1)
    y = np.asarray(targets, dtype=np.float64)[:, None]
    slopes = x.shape[1]
    best, best_error = (1.0,) + (0.0,) * slopes, float("inf")
    subsets = [used for size in range(slopes, -1, -1)
               for used in itertools.combinations(range(slopes), size)]
    for used in subsets:
        design = np.concatenate([np.ones((len(targets), 1)), x[:, list(used)]], axis=1)
        solution = np.linalg.lstsq(root * design, root * y, rcond=None)[0][:, 0]
        if (solution[1:] < 0).any():
            continue
        error = float(((root * (design @ solution[:, None] - y)) ** 2).sum())
        if error < best_error - 1e-15:
            coefficients = [float(solution[0])] + [0.0] * slopes
            for index, value in zip(used, solution[1:].tolist()):
                coefficients[1 + index] = value
            best, best_error = tuple(coefficients), error
    return best


def calibrate(model: LatencyModel, measured: Iterable[tuple[dict[str, float], float]]) -> None:
    """Step 2: fit a, b, c on (sparsity, measured relative latency) pairs; the unpruned model
    (1.0 by definition) is one more point, weighted as several."""
    points = [({}, 1.0)] + list(measured)
    features = [model.relative_features(sparsity) for sparsity, _ in points]
    targets = [y for _, y in points]
    weights = [max(3.0, len(points) / 3)] + [1.0] * (len(points) - 1)

    def fit(used: list[int]) -> tuple[float, ...]:
        return _fit_nonnegative_slopes([features[i] for i in used], [targets[i] for i in used],
                                       [weights[i] for i in used])

    # A reading caught by a burst of load is far off the fit of the other points: each point
    # is predicted from a fit without it, and the worst, if far worse than the rest, is left
    # out; then again without it, one at a time, so that a bad reading still in the fit does
    # not make a good point look bad (the unpruned point is exact and always stays; at least
    # 4 points remain). At most a quarter of the readings go: a burst catches one or two, and
    # each removal shrinks the median error the next is judged against, so unbounded removal
    # cascades on plain timing noise (a refit once set aside 5 of its 10 readings and
    # predicted 6.5x for a model timed at 4.4x). The fastest point is never judged: predicted
    # from the others it is an extrapolation, far off for that reason alone, and without it
    # the fit extrapolates to the fast end instead (a calibration once set aside its two
    # fastest points and predicted 12.6x for a model timed at 6.0x).
    outliers: set[int] = set()
    most = (len(points) - 1) // 4
    fastest = min(range(len(points)), key=lambda j: features[j][0])  # never set aside
    while len(outliers) < most and len(points) - len(outliers) > 4:
        kept = [j for j in range(len(points)) if j not in outliers]
        errors = {}
        for i in (j for j in kept[1:] if j != fastest):
            coefficients = fit([j for j in kept if j != i])
            predicted = max(1e-6, _predict(coefficients, features[i]))
            errors[i] = abs(math.log(predicted / targets[i]))  # a ratio: high and low alike
        worst = max(errors, key=errors.get)
        if errors[worst] <= max(0.05, 3 * statistics.median(errors.values())):
            break
        outliers.add(worst)
    model.coefficients = fit([i for i in range(len(points)) if i not in outliers])
    model.calibration = [{"sparsity": sparsity, "measured": y,
                          "predicted": model.relative(sparsity), "outlier": i + 1 in outliers}
                         for i, (sparsity, y) in enumerate(points[1:])]


def build_latency_model(model: nn.Module, inputs: Any, dimensions: list[PruningDimension],
                        target: Target, round_to: int | None,
                        calibration: Iterable[dict[str, float]],
                        measure_relative: Callable[[dict[str, float]], float],
                        on_progress: Callable[[], None] | None = None,
                        table_block_seconds: float = 0.004,
                        blocks: Iterable[str] = ()) -> LatencyModel:
    """Tables, then calibration on `calibration` sparsities timed by `measure_relative`
    (pruned latency / unpruned latency, paired). `blocks`: the decoder layers a depth ratio
    removes, in order (module names), where depth is searched."""
    started = time.perf_counter()
    latency_model = time_layers(model, inputs, dimensions, target, round_to,
                                block_seconds=table_block_seconds, on_layer=on_progress)
    latency_model.blocks = list(blocks)
    measured = []
    for sparsity in calibration:
        measured.append((sparsity, measure_relative(sparsity)))
        if on_progress is not None:
            on_progress()
    calibrate(latency_model, measured)
    latency_model.build_seconds = time.perf_counter() - started
    return latency_model


def prediction_errors(pairs: Iterable[tuple[float, float]]) -> dict[str, float] | None:
    """Median absolute relative error and share within +-10 % of (predicted, measured) pairs."""
    errors = [abs(predicted - measured) / measured for predicted, measured in pairs
              if predicted is not None and measured]
    if not errors:
        return None
    return {"count": len(errors), "median_abs_error": statistics.median(errors),
            "within_10pct": sum(e <= 0.10 for e in errors) / len(errors)}
