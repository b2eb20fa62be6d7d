from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import timm
from tiny_models import TinyResNet

from autoprune.errors import SearchSpaceError
from autoprune.pruning.grouping import PruningDimension
from autoprune.study.config import (config_from_params, reference_params, suggest_config,
                                    uniform_params)
from autoprune.study.space import SEARCH_SPACES_DIR, load_search_space, space_for_model


def write_space(tmp_path: Path, text: str) -> Path:
    (tmp_path / "default.yaml").write_text((SEARCH_SPACES_DIR / "default.yaml").read_text())
    path = tmp_path / "family.yaml"
    path.write_text(text)
    return path


def test_every_shipped_space_loads():
    for path in SEARCH_SPACES_DIR.glob("*.yaml"):
        space = load_search_space(path)
        assert space.criteria and space.sparsity["inner"][1] > 0


def test_family_file_is_chosen_by_timm_name_and_inherits_the_default():
    space = space_for_model(timm.create_model("resnet18", num_classes=2))
    assert space.family == "resnet"
    assert space.round_to == 8
    assert space.criteria == load_search_space(SEARCH_SPACES_DIR / "default.yaml").criteria


def test_unknown_model_gets_the_default_space():
    assert space_for_model(TinyResNet()).family == "default"


@pytest.mark.parametrize("text, field", [
    ("family: x\nsparsity: {inner: 0.5}\n", "sparsity.inner"),
    ("family: x\nsparsity: {inner: [0.9, 0.1]}\n", "sparsity.inner"),
    ("family: x\ncriteria: [l2, magic]\n", "criteria"),
    ("family: x\ngrouping: {stage_pattern: '(unclosed'}\n", "grouping.stage_pattern"),
    ("family: x\ngrouping: {round_to: -8}\n", "grouping.round_to"),
    ("family: x\nfinetune: {lr: [0, 0.1]}\n", "finetune.lr"),
    ("family: x\nsparsty: {inner: [0, 0.5]}\n", "sparsty"),
    ("family: x\nsparsity: {spread: -0.1}\n", "sparsity.spread"),
    ("family: x\nwarm_starts: [{stem: 0.5}]\n", "warm_starts"),
    ("family: x\nwarm_starts: [{inner: 1.5}]\n", "warm_starts"),
    ("family: x\nwarm_starts: {inner: 0.5}\n", "warm_starts"),
    ("family: x\nderived_warm_starts: -1\n", "derived_warm_starts"),
    ("family: x\nderived_warm_starts: true\n", "derived_warm_starts"),
])
def test_malformed_file_names_the_file_and_the_field(tmp_path, text, field):
    path = write_space(tmp_path, text)
    with pytest.raises(SearchSpaceError) as error:
        load_search_space(path, tmp_path)
    assert str(path) in str(error.value) and f"`{field}`" in str(error.value)


def test_invalid_yaml_names_the_file(tmp_path):
    path = write_space(tmp_path, "family: [unclosed\n")
    with pytest.raises(SearchSpaceError, match="not valid YAML") as error:
        load_search_space(path, tmp_path)
    assert str(path) in str(error.value)


def dims(*specs: str) -> list[PruningDimension]:
    return [PruningDimension(name=spec.split(":")[0], kind=spec.split(":")[1], layers=(), channels=64)
            for spec in specs]


def test_a_trial_draws_one_level_per_kind_and_bounded_shifts_around_it():
    space = load_search_space(SEARCH_SPACES_DIR / "resnet.yaml")
    dimensions = dims("layer1:stream", "layer1.inner:inner", "layer4:stream", "layer4.inner:inner")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    gaps = []
    for _ in range(50):
        trial = study.ask()
        config = suggest_config(trial, space, dimensions)
        levels = {kind: trial.params[f"sparsity_level:{kind}"] for kind in ("stream", "inner")}
        assert "sparsity_level:heads" not in trial.params  # no dimension of that kind
        for dim in dimensions:
            low, high = space.sparsity[dim.kind]
            ratio = config.sparsity[dim.name]
            assert low <= ratio <= high
            # within the spread of its kind's level, unless the kind's range clipped it
            assert (abs(ratio - levels[dim.kind]) <= space.sparsity_spread + 1e-9
                    or ratio in (low, high))
        gaps.append(abs(levels["stream"] - levels["inner"]))
        # the stored params rebuild exactly the configuration the trial pruned with
        assert config_from_params(trial.params, dimensions, space) == config
    # the kinds move apart: keeping the stream while cutting inner widths deeply is reachable
    assert max(gaps) > 2 * space.sparsity_spread


def test_uniform_reference_has_every_shift_at_zero_and_the_ratio_clipped_per_kind():
    space = load_search_space(SEARCH_SPACES_DIR / "resnet.yaml")  # stream up to 0.8, inner 0.9
    dimensions = dims("layer1:stream", "layer1.inner:inner")
    config = config_from_params(uniform_params(space, dimensions, 0.85), dimensions, space)
    assert config.sparsity == {"layer1": 0.8, "layer1.inner": 0.85}


def test_warm_start_prunes_each_kind_at_its_ratio_and_leaves_unnamed_kinds_whole():
    space = load_search_space(SEARCH_SPACES_DIR / "resnet.yaml")
    dimensions = dims("layer1:stream", "layer1.inner:inner", "layer4.inner:inner")
    params = reference_params(space, dimensions, {"inner": 0.6})
    assert config_from_params(params, dimensions, space).sparsity == {
        "layer1": 0.0, "layer1.inner": 0.6, "layer4.inner": 0.6}
    # a sampler that is handed these params (an enqueued trial) prunes exactly that
    study = optuna.create_study()
    study.enqueue_trial(params)
    assert suggest_config(study.ask(), space, dimensions).sparsity["layer1.inner"] == 0.6


def test_studies_with_one_level_for_every_kind_still_load():
    space = load_search_space(SEARCH_SPACES_DIR / "resnet.yaml")
    dimensions = dims("layer1:stream", "layer1.inner:inner")
    params = {"sparsity_level": 0.5, "sparsity_shift:layer1": -0.1,
              "sparsity_shift:layer1.inner": 0.2, "criterion": "l2", "kd_alpha": 0.5,
              "kd_temperature": 4.0, "lr": 0.01}
    assert config_from_params(params, dimensions, space).sparsity == {"layer1": 0.4,
                                                                      "layer1.inner": 0.7}


def test_studies_with_one_ratio_per_dimension_still_load():
    space = load_search_space(SEARCH_SPACES_DIR / "resnet.yaml")
    dimensions = dims("layer1:stream", "layer1.inner:inner")
    params = {"sparsity:layer1": 0.3, "sparsity:layer1.inner": 0.7, "criterion": "l2",
              "kd_alpha": 0.5, "kd_temperature": 4.0, "lr": 0.01}
    assert config_from_params(params, dimensions, space).sparsity == {"layer1": 0.3,
                                                                      "layer1.inner": 0.7}


def test_a_space_with_nothing_to_search_proposes_fixed_ratios():
    space = replace(load_search_space(SEARCH_SPACES_DIR / "default.yaml"),
                    sparsity={"stream": (0.1, 0.1), "inner": (0.2, 0.2), "heads": (0.0, 0.0)})
    dimensions = dims("layer1:stream", "layer1.inner:inner")
    trial = optuna.create_study().ask()
    config = suggest_config(trial, space, dimensions)
    assert config.sparsity == {"layer1": 0.1, "layer1.inner": 0.2}
    assert not any(key.startswith("sparsity") for key in trial.params)
    assert config_from_params(uniform_params(space, dimensions, 0.5), dimensions,
                              space).sparsity == config.sparsity
