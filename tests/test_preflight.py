"""Pre-flight check: a model that cannot be pruned stops the search before trial 1, named."""

from __future__ import annotations

import pytest
from tiny_models import QUICK, GroupedAfterConcat, TinyTransformer, tiny_data

import autoprune
from autoprune.errors import InvalidInputError


@pytest.mark.parametrize("model, names", [
    (GroupedAfterConcat(), ["branch_b"]),
    (TinyTransformer(), ["fc2", "embed_dim"]),  # nn.MultiheadAttention's width, tied to the stream
])
def test_unprunable_model_fails_before_any_trial_naming_the_layer(tmp_path, model, names):
    train, val = tiny_data()
    with pytest.raises(InvalidInputError, match="pre-flight check") as raised:
        autoprune.search(model, options=QUICK, trials=2, train=train, val=val, output_dir=tmp_path,
                         study_name="s", verbose=False, write_report=False, threads=1)
    message = str(raised.value)
    for name in names:
        assert name in message
    assert "ignored_layers" in message
    assert not (tmp_path / "s").exists()  # no study, no storage: nothing was started


def test_ignoring_the_named_layers_lets_the_search_run(tmp_path):
    train, val = tiny_data()
    result = autoprune.search(GroupedAfterConcat(), options=QUICK, trials=2, train=train, val=val,
                              finetune_steps=1, output_dir=tmp_path, study_name="s",
                              verbose=False, write_report=False, threads=1,
                              ignored_layers=["^branch_b$"])
    assert len(result.study.trials) >= 2
