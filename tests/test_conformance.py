"""Conformance: every supported model family prunes, trains, shrinks and round-trips.

Driven by the registry in `model_zoo.py`. For each family, a few sampled configurations of
its own search space are pruned; each pruned copy must run forwards and backwards, have
fewer MACs and parameters, keep the layers its family file protects, and come back from the
safetensors + JSON checkpoint with identical outputs.
"""

from __future__ import annotations

import importlib.util

import optuna
import pytest
import torch
from model_zoo import ZOO, example_inputs

from autoprune.pruning.attention import find_attention, head_count
from autoprune.pruning.prune import kept_out_channels
from autoprune.runtime.measure import count_macs_and_params
from autoprune.runtime.model_io import logits_of, run_model
from autoprune.store.checkpoint import load_checkpoint, save_checkpoint
from autoprune.study.config import config_from_params, suggest_config, uniform_params
from autoprune.study.preflight import preflight
from autoprune.study.prepared import PreparedModel
from autoprune.study.space import resolve_search_space

CONFIGURATIONS = 3  # the first is uniform pruning at 0.5 (capped by the family's ranges)


def _configurations(space, dimensions):
    yield config_from_params(uniform_params(space, dimensions, 0.5), dimensions, space)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(CONFIGURATIONS - 1):
        yield suggest_config(study.ask(), space, dimensions)


@pytest.mark.parametrize("entry", ZOO, ids=[entry.name for entry in ZOO])
def test_family_prunes_runs_shrinks_and_round_trips(entry, tmp_path):
    if entry.needs and importlib.util.find_spec(entry.needs) is None:
        pytest.skip(f"needs {entry.needs} (pip install 'autoprune[hf]')")
    torch.manual_seed(0)
    inputs, targets = example_inputs(entry, batch=4)
    built = entry.build().eval()
    # the configurations a search timed in PyTorch draws (fp32: no precision parameter)
    space = resolve_search_space(built, None).for_target("cpu", ("fp32",))
    assert space.family == entry.family

    prepared = PreparedModel.build(built, inputs, space)
    model, dimensions, ignored_names = prepared.model, prepared.dimensions, prepared.ignored_names
    assert entry.kinds <= {dim.kind for dim in dimensions}
    preflight(prepared)

    base_macs, base_params = count_macs_and_params(model, inputs)
    base_widths = kept_out_channels(model)
    base_heads = {a.name: head_count(model, a) for a in find_attention(model)}
    with torch.no_grad():
        base_logits = logits_of(run_model(model, inputs))

    for index, config in enumerate(_configurations(space, dimensions)):
        pruned = prepared.prune(config.sparsity, config.criterion,
                                gradient_batches=[(inputs, targets)])
        label = f"{entry.name} config {index} ({config.criterion}, {config.sparsity})"

        pruned.model.train()
        logits = logits_of(run_model(pruned.model, inputs))
        assert logits.shape == base_logits.shape, label
        torch.nn.functional.cross_entropy(logits, targets).backward()
        assert all(p.grad is not None for p in pruned.model.parameters() if p.requires_grad), label

        pruned.model.eval()
        macs, params = count_macs_and_params(pruned.model, inputs)
        assert macs < base_macs and params < base_params, label
        widths = kept_out_channels(pruned.model)
        for name in ignored_names:  # the stem, the classifier and family-protected layers
            if name in base_widths:
                assert widths[name] == base_widths[name], f"{label}: {name} was pruned"
        if index == 0 and base_heads and any(d.kind == "heads" for d in dimensions):
            heads = {a.name: head_count(pruned.model, a) for a in find_attention(pruned.model)}
            assert all(heads[name] < count for name, count in base_heads.items()), label

        directory = save_checkpoint(tmp_path / str(index), pruned.model, model, pruned.history, inputs)
        loaded = load_checkpoint(directory, model)
        with torch.no_grad():
            expected = logits_of(run_model(pruned.model.cpu(), inputs))
            actual = logits_of(run_model(loaded, inputs))
        assert torch.equal(expected, actual), label
