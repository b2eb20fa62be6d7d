"""Pre-flight check: a model that cannot be pruned stops the search before trial 1, named."""

from __future__ import annotations

import pytest
from tiny_models import QUICK, GroupedAfterConcat, SplitStage, TinyTransformer, tiny_data

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


def test_layers_feeding_a_channel_split_are_kept_and_the_rest_is_searched(tmp_path, caplog):
    """Torch-Pruning maps channels to the wrong part of a split, and CSPNet splits by a size it
    stores: the convolution whose output is split keeps its width, the others are searched."""
    import torch

    from autoprune.study.prepared import PreparedModel
    from autoprune.study.space import resolve_search_space

    model = SplitStage()
    example = torch.randn(2, 3, 8, 8)
    prepared = PreparedModel.build(model, example, resolve_search_space(model, None))
    assert prepared.split_kept == ("conv_exp",)
    assert "conv_exp" in prepared.ignored_names
    assert prepared.dimensions and all("conv_exp" not in dim.members for dim in prepared.dimensions)
    train, val = tiny_data()
    with caplog.at_level("INFO", logger="autoprune"):
        result = autoprune.search(SplitStage(num_classes=4), options=QUICK, trials=3, train=train,
                                  val=val, finetune_steps=1, output_dir=tmp_path, study_name="s",
                                  write_report=False, threads=1)
    assert "kept unpruned: 1 layers whose outputs are split" in caplog.text
    assert any(c.params < sum(p.numel() for p in model.parameters()) for c in result.pareto)
    member = result.load(result.pareto[-1].trial)
    assert member.conv_exp.out_channels == 32 and member(example).shape == (2, 4)


def _torchvision(name):
    import torchvision
    return torchvision.models.get_model(name, weights=None, num_classes=10)


def _timm(name):
    import timm
    return timm.create_model(name, pretrained=False, num_classes=10)


@pytest.mark.parametrize("build, words", [
    (lambda: _torchvision("shufflenet_v2_x0_5"), "a channel shuffle"),
    (lambda: _timm("dpn68"), "a concatenation whose inputs' widths it cannot infer"),
    (lambda: _torchvision("swin_t"), "recursion limit"),
], ids=["shufflenet_v2", "dpn68", "swin_t"])
def test_a_model_torch_pruning_cannot_trace_is_refused_with_what_it_was_tracing(
        tmp_path, build, words):
    import time

    import torch
    generator = torch.Generator().manual_seed(0)
    batch = (torch.randn(4, 3, 64, 64, generator=generator), torch.tensor([0, 1, 2, 3]))
    started = time.monotonic()
    with pytest.raises(InvalidInputError, match="Torch-Pruning cannot trace") as raised:
        autoprune.search(build(), trials=2, train=[batch], val=[batch], output_dir=tmp_path,
                         study_name="s", verbose=False, write_report=False, threads=1)
    assert words in str(raised.value) and "ignored_layers cannot help" in str(raised.value)
    assert not (tmp_path / "s").exists()
    assert time.monotonic() - started < 60  # seconds, not the minutes a search would take


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"),
                    reason="the address-space cap uses Linux's RLIMIT_AS and /proc")
def test_the_dependency_analysis_cannot_take_more_memory_than_its_allowance(monkeypatch):
    """Torch-Pruning's index mappings grew to 24 GB on torchvision's Swin-T: the analysis
    runs under a cap, a runaway allocation is a refusal, and the cap is lifted afterwards."""
    import resource

    import torch

    from autoprune.pruning import grouping

    before = resource.getrlimit(resource.RLIMIT_AS)
    monkeypatch.setattr(grouping, "ANALYSIS_MEMORY", 256 << 20)
    with pytest.raises(InvalidInputError, match="needed more than .* GiB beyond"):
        with grouping._torch_pruning_refusals(torch.nn.Linear(2, 2)):
            runaway = [0] * (2 << 30)  # 16 GiB of list
            del runaway
    assert resource.getrlimit(resource.RLIMIT_AS) == before
    # and room enough after: a 1 GiB tensor allocates
    assert torch.empty(1 << 28).numel() == 1 << 28


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"),
                    reason="the address-space cap uses Linux's RLIMIT_AS and /proc")
def test_a_slowly_growing_analysis_is_stopped_when_its_time_is_up(monkeypatch):
    """swin_v2_t grows by tens of MB a second: after ANALYSIS_SECONDS the cap closes on it."""
    import resource
    import time

    import torch

    from autoprune.pruning import grouping

    before = resource.getrlimit(resource.RLIMIT_AS)
    monkeypatch.setattr(grouping, "ANALYSIS_SECONDS", 0.5)
    started = time.monotonic()
    with pytest.raises(InvalidInputError, match="or more than 0 s, and was stopped"):
        with grouping._torch_pruning_refusals(torch.nn.Linear(2, 2)):
            grown = []
            while time.monotonic() - started < 20:  # about 100 MB a second, far below the cap
                grown.append(bytearray(1 << 20))
                time.sleep(0.01)
    assert time.monotonic() - started < 5
    assert resource.getrlimit(resource.RLIMIT_AS) == before
