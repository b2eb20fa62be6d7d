import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from tiny_models import TinyResNet

from autoprune.errors import CheckpointError
from autoprune.pruning.grouping import ignored_modules, plan_dimensions
from autoprune.pruning.prune import prune_copy
from autoprune.store.checkpoint import (ARCHITECTURE_FILE, WEIGHTS_FILE, load_checkpoint,
                                        save_checkpoint)

EXAMPLE = torch.randn(4, 3, 8, 8)


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(1)
    model = TinyResNet().eval()
    dims = plan_dimensions(model, EXAMPLE, None, ignored=ignored_modules(model, EXAMPLE, []))
    pruned = prune_copy(model, EXAMPLE, dims, {d.name: 0.5 for d in dims}, "l1", ["fc"])
    pruned.model.eval()
    directory = save_checkpoint(tmp_path / "ckpt", pruned.model, model, pruned.history, EXAMPLE)
    return directory, pruned.model


FRESH_PROCESS = """
import sys, torch
sys.path.insert(0, {tests!r})
from safetensors.torch import load_file, save_file
from autoprune import load_checkpoint
from tiny_models import TinyResNet
model = load_checkpoint({ckpt!r}, TinyResNet())
x = load_file({io!r})["x"]
save_file({{"y": model(x)}}, {out!r})
"""


def test_round_trip_in_a_fresh_process_gives_identical_outputs(saved, tmp_path):
    directory, pruned = saved
    io, out = tmp_path / "x.safetensors", tmp_path / "y.safetensors"
    save_file({"x": EXAMPLE}, io)
    code = FRESH_PROCESS.format(tests=str(Path(__file__).parent), ckpt=str(directory),
                                io=str(io), out=str(out))
    subprocess.run([sys.executable, "-c", code], check=True)
    from safetensors.torch import load_file
    with torch.no_grad():
        assert torch.equal(load_file(out)["y"], pruned(EXAMPLE))


def test_checkpoint_is_plain_data(saved):
    directory, _ = saved
    description = json.loads((directory / ARCHITECTURE_FILE).read_text())
    assert description["pruning_history"] and description["weights_sha256"]
    assert sorted(p.name for p in directory.iterdir()) == [ARCHITECTURE_FILE, WEIGHTS_FILE]


def test_truncated_weights_are_refused_naming_the_file(saved):
    directory, _ = saved
    weights = directory / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated or was changed") as error:
        load_checkpoint(directory, TinyResNet())
    assert str(weights) in str(error.value)


class _Payload:
    def __reduce__(self):
        return (Path.touch, (Path("/tmp/autoprune-pickle-ran"),))


def test_a_pickle_in_place_of_the_weights_never_runs(saved, tmp_path):
    directory, _ = saved
    marker = Path("/tmp/autoprune-pickle-ran")
    marker.unlink(missing_ok=True)
    (directory / WEIGHTS_FILE).write_bytes(pickle.dumps(_Payload()))
    with pytest.raises(CheckpointError):
        load_checkpoint(directory, TinyResNet())
    assert not marker.exists()


def test_base_model_of_another_class_is_refused(saved):
    directory, _ = saved
    with pytest.raises(CheckpointError, match="pruned from a .*TinyResNet"):
        load_checkpoint(directory, torch.nn.Sequential(torch.nn.Linear(2, 2)))


def test_base_model_of_another_width_is_refused(saved):
    directory, _ = saved
    with pytest.raises(CheckpointError, match="does not fit|cannot load"):
        load_checkpoint(directory, TinyResNet(width=4))


def test_missing_description_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no architecture description"):
        load_checkpoint(tmp_path, TinyResNet())


def test_a_module_that_checks_its_version_on_load_round_trips(tmp_path):
    """torchvision's MNASNet reads its version from the state dict's `_metadata`, which a
    state dict read back from safetensors has lost: the checkpoint and a user's weights file
    both load it with the versions the modules expect, and a tied weight saved once loads."""
    import torchvision
    from safetensors.torch import save_model

    from autoprune.integrations.models import load_weights

    torch.manual_seed(0)
    model = torchvision.models.mnasnet0_5(weights=None, num_classes=10).eval()
    example = torch.randn(2, 3, 32, 32)
    dims = plan_dimensions(model, example, None, ignored=ignored_modules(model, example, []))
    cut = prune_copy(model, example, dims, {d.name: 0.3 for d in dims}, "l2")
    pruned = cut.model.eval()
    directory = save_checkpoint(tmp_path / "ckpt", pruned, model, cut.history, example)
    with torch.no_grad():
        assert torch.equal(load_checkpoint(directory, model)(example), pruned(example))

    save_model(model, tmp_path / "user.safetensors")
    fresh = torchvision.models.mnasnet0_5(weights=None, num_classes=10).eval()
    load_weights(fresh, tmp_path / "user.safetensors")
    plain = tmp_path / "plain.pt"
    torch.save(dict(model.state_dict()), plain)  # a plain dict: no _metadata
    other = load_weights(torchvision.models.mnasnet0_5(weights=None, num_classes=10).eval(), plain)
    with torch.no_grad():
        assert torch.equal(fresh(example), model(example))
        assert torch.equal(other(example), model(example))


def test_tied_weights_saved_once_load_and_a_missing_tensor_is_refused(tmp_path):
    from safetensors.torch import save_model

    from autoprune.store.checkpoint import load_weights_file

    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(5, 4)
            self.head = torch.nn.Linear(4, 5, bias=False)
            self.head.weight = self.embed.weight

    model = Tied()
    save_model(model, tmp_path / "tied.safetensors")
    fresh = Tied()
    load_weights_file(fresh, tmp_path / "tied.safetensors")
    assert torch.equal(fresh.head.weight, model.embed.weight)
    save_file({"embed.weight": model.embed.weight.detach()}, tmp_path / "short.safetensors")
    lone = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with pytest.raises(RuntimeError, match="missing from the file"):
        load_weights_file(lone, tmp_path / "short.safetensors")
