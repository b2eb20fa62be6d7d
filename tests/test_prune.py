import pytest
import torch
from tiny_models import TinyResNet

from autoprune.pruning.criteria import CRITERIA
from autoprune.pruning.grouping import ignored_modules, plan_dimensions, stage_of
from autoprune.pruning.prune import kept_out_channels, prune_copy, replay_history

EXAMPLE = torch.randn(4, 3, 8, 8)


def dimensions_of(model):
    ignored = ignored_modules(model, EXAMPLE, [])
    return plan_dimensions(model, EXAMPLE, r"^(layer\d)\.", ignored=ignored)


def test_residual_stream_and_inner_widths_are_separate_dimensions(tiny_model):
    dims = {d.name: d for d in dimensions_of(tiny_model)}
    assert set(dims) == {"layer1.stream", "layer1.inner", "layer2.stream", "layer2.inner"}
    assert dims["layer1.inner"].layers == ("layer1.0.conv1", "layer1.1.conv1")
    assert dims["layer1.stream"].kind == "stream"


def test_classifier_output_is_never_pruned(tiny_model):
    names = [d for dim in dimensions_of(tiny_model) for d in dim.layers]
    assert "fc" not in names
    everything = {d.name: 0.9 for d in dimensions_of(tiny_model)}
    pruned = prune_copy(tiny_model, EXAMPLE, dimensions_of(tiny_model), everything, "l2", ["fc"])
    assert pruned.model.fc.out_features == 4
    assert pruned.model(EXAMPLE).shape == (4, 4)


@pytest.mark.parametrize("name, stage", [("layer1.0.conv1", "layer1.0"), ("blocks.2.1.conv_pw", "blocks.2"),
                                         ("conv_head", "conv_head"), ("features.3.conv.0", "features.3")])
def test_automatic_stage_rule(name, stage):
    assert stage_of(name, None) == stage


@pytest.mark.parametrize("criterion", sorted(CRITERIA))
def test_each_criterion_prunes_and_the_model_still_runs(tiny_model, criterion):
    dims = dimensions_of(tiny_model)
    batches = [(EXAMPLE, torch.tensor([0, 1, 2, 3]))]
    pruned = prune_copy(tiny_model, EXAMPLE, dims, {d.name: 0.5 for d in dims}, criterion, ["fc"],
                        gradient_batches=batches)
    before = sum(p.numel() for p in tiny_model.parameters())
    after = sum(p.numel() for p in pruned.model.parameters())
    assert after < 0.6 * before
    out = pruned.model(EXAMPLE)
    assert out.shape == (4, 4) and torch.isfinite(out).all()
    out.sum().backward()  # and it still trains


def test_per_dimension_ratios_are_honoured_in_measured_channel_counts(tiny_model):
    dims = dimensions_of(tiny_model)
    ratios = {"layer1.stream": 0.25, "layer1.inner": 0.5, "layer2.stream": 0.0, "layer2.inner": 0.75}
    kept = kept_out_channels(prune_copy(tiny_model, EXAMPLE, dims, ratios, "l1", ["fc"]).model)
    assert kept["conv1"] == kept["layer1.0.conv2"] == kept["layer1.1.conv2"] == 6   # 8 * 0.75
    assert kept["layer1.0.conv1"] == kept["layer1.1.conv1"] == 8                     # 16 * 0.5
    assert kept["down"] == kept["layer2.1.conv2"] == 16                             # untouched
    assert kept["layer2.0.conv1"] == kept["layer2.1.conv1"] == 8                     # 32 * 0.25


def test_round_to_keeps_multiples(tiny_model):
    dims = dimensions_of(tiny_model)
    kept = kept_out_channels(prune_copy(tiny_model, EXAMPLE, dims, {"layer2.inner": 0.3}, "l2",
                                        ["fc"], round_to=8).model)
    assert kept["layer2.0.conv1"] % 8 == 0 and kept["layer2.0.conv1"] < 32


def test_original_model_is_left_untouched(tiny_model):
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    dims = dimensions_of(tiny_model)
    prune_copy(tiny_model, EXAMPLE, dims, {d.name: 0.5 for d in dims}, "lamp", ["fc"])
    after = tiny_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_replaying_the_history_rebuilds_the_same_architecture(tiny_model):
    dims = dimensions_of(tiny_model)
    pruned = prune_copy(tiny_model, EXAMPLE, dims, {d.name: 0.5 for d in dims}, "random", ["fc"])
    rebuilt = replay_history(TinyResNet().eval(), EXAMPLE, pruned.history)
    rebuilt.load_state_dict(pruned.model.state_dict())
    assert torch.equal(rebuilt(EXAMPLE), pruned.model.eval()(EXAMPLE))
