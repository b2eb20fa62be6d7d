"""Search spaces as data: one YAML file per model family under `search_spaces/`.

A family file only states what differs from `default.yaml`; loading merges the two and
validates every field, so a malformed file fails before any work with its path and field.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from ..errors import SearchSpaceError


def _search_spaces_dir() -> Path:
    """The repository's `search_spaces/` (editable install), else the copy installed with us."""
    package = Path(__file__).resolve().parents[1]  # autoprune/
    checkout = package.parent / "search_spaces"
    return checkout if checkout.is_dir() else package / "search_spaces"


SEARCH_SPACES_DIR = _search_spaces_dir()
DEFAULT_FILE = "default.yaml"
SPARSITY_KINDS = ("stream", "inner", "heads")
OPTIMIZERS = ("sgd", "adamw")
PRECISIONS = ("fp32", "int8")


@dataclass(frozen=True)
class SearchSpace:
    """What a trial may propose for one model family, and how its layers are grouped."""

    family: str
    source: str
    matches: tuple[str, ...] = ()
    stage_pattern: str | None = None
    max_dimensions: int = 24
    round_to: int | None = None
    ignored_layers: tuple[str, ...] = ()
    sparsity: dict[str, tuple[float, float]] = field(default_factory=dict)
    sparsity_step: float = 0.05
    sparsity_spread: float | None = None
    depth: tuple[float, float] = (0.0, 0.0)  # fraction of decoder layers removed (depth.py)
    criteria: tuple[str, ...] = ()
    kd_alpha: tuple[float, float] = (0.0, 1.0)
    kd_temperature: tuple[float, float] = (1.0, 8.0)
    lr: tuple[float, float] = (1e-4, 3e-3)
    optimizer: str = "adamw"
    uniform_ratios: tuple[float, ...] = ()
    warm_starts: tuple[dict[str, float], ...] = ()
    derived_warm_starts: int = 0  # private-widths-first starting points (warm_starts.py)
    precisions: tuple[str, ...] = ("fp32",)  # numeric precisions a trial may choose
    precision_requested: bool = False  # the chosen file names them (not only default.yaml)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def fingerprint(self) -> dict[str, Any]:
        """The fields that change what trials mean (not where the file lies). fp32 alone is
        left out, so studies from before precision was searched resume."""
        data = self.to_dict()
        data.pop("source")
        data.pop("precision_requested")
        if data["precisions"] == ("fp32",):
            data.pop("precisions")
        if data["depth"] == (0.0, 0.0):  # studies from before depth was searched resume
            data.pop("depth")
        data.pop("derived_warm_starts")  # which trials come first, not what a trial means
        return data

    def for_target(self, target_name: str, runnable: tuple[str, ...]) -> "SearchSpace":
        """The space restricted to the precisions the timing target can run (`runnable`).
        The default file's int8 is dropped quietly on a target without it; int8 the chosen
        file asks for is refused before any work."""
        missing = [p for p in self.precisions if p not in runnable]
        if missing and self.precision_requested:
            raise SearchSpaceError(f"{self.source}: precision {', '.join(missing)} cannot run on "
                                   f"target {target_name!r} (it runs {', '.join(runnable)}); "
                                   "use --target onnxruntime, or drop it from the file")
        kept = tuple(p for p in self.precisions if p in runnable)
        if not kept:
            raise SearchSpaceError(f"{self.source}: no precision target {target_name!r} runs")
        return replace(self, precisions=kept)


def _merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SearchSpaceError(f"{path}: search-space file not found") from None
    except yaml.YAMLError as err:
        raise SearchSpaceError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise SearchSpaceError(f"{path}: must hold a mapping of fields, got {type(data).__name__}")
    return data


class _Reader:
    """Typed access to a merged YAML mapping, with errors naming the file and the field."""

    def __init__(self, data: dict, path: Path):
        self.data, self.path = data, path

    def fail(self, name: str, message: str):
        raise SearchSpaceError(f"{self.path}: field `{name}` {message}")

    def get(self, name: str) -> Any:
        value: Any = self.data
        for part in name.split("."):
            if not isinstance(value, dict) or part not in value:
                self.fail(name, "is missing")
            value = value[part]
        return value

    def number(self, name: str, low: float, high: float, value: Any = None) -> float:
        value = self.get(name) if value is None else value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(name, f"must be a number, got {value!r}")
        if not low <= value <= high:
            self.fail(name, f"must lie in [{low}, {high}], got {value}")
        return float(value)

    def interval(self, name: str, low: float, high: float) -> tuple[float, float]:
        value = self.get(name)
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            self.fail(name, f"must be a [low, high] pair, got {value!r}")
        lo, hi = (self.number(name, low, high, v) for v in value)
        if lo > hi:
            self.fail(name, f"has low {lo} above high {hi}")
        return lo, hi

    def strings(self, name: str) -> tuple[str, ...]:
        value = self.get(name)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(name, f"must be a list of strings, got {value!r}")
        return tuple(value)


def parse_search_space(data: dict, path: Path) -> SearchSpace:
    """Validate a merged mapping into a `SearchSpace`; errors name `path` and the field."""
    from ..pruning.criteria import CRITERIA

    read = _Reader(data, path)
    known = {"family", "matches", "grouping", "sparsity", "criteria", "distillation", "finetune",
             "uniform_ratios", "warm_starts", "derived_warm_starts", "precision"}
    for key in data:
        if key not in known:
            read.fail(key, f"is not a known field (known: {', '.join(sorted(known))})")
    family = read.get("family")
    if not isinstance(family, str) or not family:
        read.fail("family", "must be a non-empty string")

    stage_pattern = read.get("grouping.stage_pattern")
    if stage_pattern is not None:
        try:
            if re.compile(stage_pattern).groups < 1:
                read.fail("grouping.stage_pattern", "needs one capture group naming the stage")
        except (re.error, TypeError) as err:
            read.fail("grouping.stage_pattern", f"is not a valid regex: {err}")
    round_to = read.get("grouping.round_to")
    if round_to is not None and (isinstance(round_to, bool) or not isinstance(round_to, int)
                                 or round_to < 1):
        read.fail("grouping.round_to", f"must be a positive integer or null, got {round_to!r}")
    max_dimensions = read.get("grouping.max_dimensions")
    if isinstance(max_dimensions, bool) or not isinstance(max_dimensions, int) or max_dimensions < 1:
        read.fail("grouping.max_dimensions", f"must be a positive integer, got {max_dimensions!r}")
    ignored = read.strings("grouping.ignored_layers")
    for pattern in ignored:
        try:
            re.compile(pattern)
        except re.error as err:
            read.fail("grouping.ignored_layers", f"has an invalid regex {pattern!r}: {err}")

    sparsity = {kind: read.interval(f"sparsity.{kind}", 0.0, 0.95) for kind in SPARSITY_KINDS}
    step = read.number("sparsity.step", 0.001, 0.5)
    depth = read.interval("sparsity.depth", 0.0, 0.9)
    spread = read.get("sparsity.spread")
    if spread is not None:
        spread = read.number("sparsity.spread", 0.0, 0.95)
    criteria = read.strings("criteria")
    if not criteria:
        read.fail("criteria", "must name at least one criterion")
    for name in criteria:
        if name not in CRITERIA:
            read.fail("criteria", f"names unknown criterion {name!r} (known: {', '.join(CRITERIA)})")
    uniform = read.get("uniform_ratios")
    if not isinstance(uniform, list):
        read.fail("uniform_ratios", f"must be a list of ratios, got {uniform!r}")
    uniform_ratios = tuple(read.number("uniform_ratios", 0.0, 0.95, v) for v in uniform)
    warm_starts = read.get("warm_starts")
    if not isinstance(warm_starts, list) or not all(isinstance(w, dict) and w for w in warm_starts):
        read.fail("warm_starts", f"must be a list of {{kind: ratio}} mappings, got {warm_starts!r}")
    for start in warm_starts:
        for kind, ratio in start.items():
            if kind not in SPARSITY_KINDS:
                read.fail("warm_starts", f"names unknown kind {kind!r} "
                                         f"(known: {', '.join(SPARSITY_KINDS)})")
            read.number("warm_starts", 0.0, 0.95, ratio)
    derived = read.get("derived_warm_starts")
    if isinstance(derived, bool) or not isinstance(derived, int) or not 0 <= derived <= 10:
        read.fail("derived_warm_starts", f"must be a whole number from 0 to 10, got {derived!r}")
    matches = read.strings("matches") if "matches" in data else ()
    lr = read.interval("finetune.lr", 1e-7, 10.0)
    if lr[0] <= 0:
        read.fail("finetune.lr", "must be positive (it is sampled on a log scale)")
    optimizer = read.get("finetune.optimizer")
    if optimizer not in OPTIMIZERS:
        read.fail("finetune.optimizer", f"must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    precisions = read.strings("precision") if "precision" in data else ("fp32",)
    if not precisions or len(set(precisions)) != len(precisions) or any(
            p not in PRECISIONS for p in precisions):
        read.fail("precision", f"must be a list of distinct precisions among "
                               f"{', '.join(PRECISIONS)}, got {list(precisions)!r}")
    return SearchSpace(
        family=family, source=str(path), matches=matches, stage_pattern=stage_pattern,
        max_dimensions=max_dimensions, round_to=round_to, ignored_layers=ignored,
        sparsity=sparsity, sparsity_step=step, sparsity_spread=spread, depth=depth,
        criteria=criteria,
        kd_alpha=read.interval("distillation.alpha", 0.0, 1.0),
        kd_temperature=read.interval("distillation.temperature", 0.1, 100.0),
        lr=lr, optimizer=optimizer, uniform_ratios=uniform_ratios,
        warm_starts=tuple({kind: float(ratio) for kind, ratio in start.items()}
                          for start in warm_starts),
        derived_warm_starts=derived,
        precisions=tuple(precisions),
    )


def load_search_space(path: str | Path, directory: Path = SEARCH_SPACES_DIR) -> SearchSpace:
    """The space in `path`, with fields it omits taken from `directory`'s default.yaml."""
    path = Path(path)
    data = _read_yaml(path)
    default_path = directory / DEFAULT_FILE
    requested = False
    if path.resolve() != default_path.resolve():
        requested = "precision" in data
        data = _merge(_read_yaml(default_path), data)
    return replace(parse_search_space(data, path), precision_requested=requested)


def model_identifiers(model) -> list[str]:
    """Names a family file can match: the timm architecture, then the class name."""
    names = []
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
    if isinstance(cfg, dict) and cfg.get("architecture"):
        names.append(str(cfg["architecture"]))
    names.append(type(model).__name__)
    return names


def space_for_model(model, directory: Path = SEARCH_SPACES_DIR) -> SearchSpace:
    """The family file whose `matches` patterns fit `model`, else the default space."""
    identifiers = model_identifiers(model)
    for path in sorted(directory.glob("*.yaml")):
        if path.name == DEFAULT_FILE:
            continue
        space = load_search_space(path, directory)
        if any(fnmatch.fnmatchcase(name, pattern) for name in identifiers
               for pattern in space.matches):
            return space
    return load_search_space(directory / DEFAULT_FILE, directory)


def resolve_search_space(model, search_space: str | Path | SearchSpace | None) -> SearchSpace:
    """What `search(search_space=...)` means: a loaded space, a file, or the model's family,
    without the criteria that cannot rank this model's channels (bn_scale without BatchNorm)."""
    from ..pruning.criteria import usable_criteria

    if isinstance(search_space, SearchSpace):
        space = search_space
    elif search_space is None:
        space = space_for_model(model)
    else:
        path = Path(search_space)
        if not path.suffix:
            path = SEARCH_SPACES_DIR / f"{search_space}.yaml"
        space = load_search_space(path)
    criteria = usable_criteria(model, space.criteria)
    if not criteria:
        raise SearchSpaceError(f"{space.source}: none of the criteria {', '.join(space.criteria)} "
                               f"can rank the channels of {type(model).__name__} "
                               "(bn_scale needs BatchNorm layers)")
    return replace(space, criteria=criteria)
