from pathlib import Path

import pytest
import timm

from autoprune.errors import SearchSpaceError
from autoprune.space import SEARCH_SPACES_DIR, load_search_space, space_for_model
from tiny_models import TinyResNet


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
