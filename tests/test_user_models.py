"""Your own model on the command line: a torchvision name (`tv:`) and a local HuggingFace
directory are searched, and the study's result opens and exports without the model in hand
(the architecture is rebuilt from what the study recorded)."""

import json

import optuna
import pytest
import torch

from autoprune.cli import main
from autoprune.pruning.attention import find_attention, sync_heads
from autoprune.results.result import SearchResult
from autoprune.runtime import logits_of
from test_user_data import no_study_under, write_digit_images

transformers = pytest.importorskip("transformers")


def search(tmp_path, model, data, *extra):
    return main(["-q", "search", "--model", str(model), "--data", str(data),
                 "--trials", "2", "--finetune-steps", "2", "--batch-size", "8", "--threads", "1",
                 "--output-dir", str(tmp_path / "out"), "--study-name", "mine",
                 "--early-stop-margin", "off", "--promote-share", "off",
                 # tiny models barely trained: every trial counts for the front
                 "--constraint", "max_accuracy_drop=1", "--constraint", "min_accuracy=0", *extra])


def opened(tmp_path) -> SearchResult:
    """The study as `autoprune export` opens it: from storage, without the searched model."""
    return SearchResult.from_storage("mine", f"sqlite:///{tmp_path / 'out' / 'mine' / 'study.db'}",
                                     cache_dir=tmp_path / "out" / "mine" / "trials")


def exported_matches_loaded(tmp_path, result: SearchResult, inputs) -> None:
    trial = result.pareto[0].trial
    target = tmp_path / "model.safetensors"
    assert main(["-q", "export", "mine", "--output-dir", str(tmp_path / "out"),
                 "--trial", str(trial), "--output", str(target)]) == 0
    import autoprune

    loaded = result.load(trial).eval()
    reloaded = autoprune.load(target, result.base_model).eval()
    assert torch.equal(logits_of(loaded(inputs)), logits_of(reloaded(inputs)))
    parameters = lambda model: sum(p.numel() for p in model.parameters())  # noqa: E731
    assert parameters(loaded) < parameters(result.base_model)


def tiny_vit_directory(path, labels: int = 10):
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32,
                                    num_hidden_layers=2, num_attention_heads=4,
                                    intermediate_size=64, num_labels=labels)
    torch.manual_seed(0)
    transformers.ViTForImageClassification(config).save_pretrained(path)
    return path


def test_a_torchvision_model_is_trained_on_a_folder_searched_and_exported(tmp_path):
    write_digit_images(tmp_path / "images", per_class=16)
    assert search(tmp_path, "tv:resnet18", tmp_path / "images", "--image-size", "32",
                  "--train-epochs", "1") == 0
    cached = list((tmp_path / "out" / "models").glob("tv-resnet18-images-*-1ep.json"))
    assert len(cached) == 1
    assert json.loads(cached[0].read_text())["torchvision_model"] == "resnet18"
    result = opened(tmp_path)
    assert type(result.base_model).__module__ == "torchvision.models.resnet"
    assert result.base_model.fc.out_features == 3
    exported_matches_loaded(tmp_path, result, torch.randn(2, 3, 32, 32))


def test_a_huggingface_directory_is_searched_with_its_heads_pruned_and_exported(tmp_path):
    directory = tiny_vit_directory(tmp_path / "my-vit")
    assert search(tmp_path, directory, "digits") == 0
    study = optuna.load_study(study_name="mine",
                              storage=f"sqlite:///{tmp_path / 'out' / 'mine' / 'study.db'}")
    assert study.user_attrs["settings"]["model_source"] == {
        "huggingface_directory": str(directory.resolve())}
    result = opened(tmp_path)
    assert type(result.base_model).__name__ == "ViTForImageClassification"
    heads = [sorted(sync_heads(result.load(c.trial)).values()) for c in result.pareto]
    assert any(counts[-1] < 4 for counts in heads)  # whole heads went (4 in the original)
    exported_matches_loaded(tmp_path, result, torch.randn(2, 3, 32, 32))


def test_a_vit_saved_by_transformers_round_trips_after_head_pruning(tmp_path):
    """transformers 5 writes ViT's q/k/v under their old names; loading resized must map them."""
    from autoprune.huggingface import from_pretrained, save_pretrained

    model = from_pretrained(tiny_vit_directory(tmp_path / "vit")).eval()
    assert len(find_attention(model)) == 2
    layer = model.vit.layers[0].attention if hasattr(model.vit, "layers") else None
    if layer is None:
        pytest.skip("this transformers version names ViT's attention differently")
    for name in ("q_proj", "k_proj", "v_proj"):  # keep heads 0 and 2 of 4 (8 wide each)
        old = getattr(layer, name)
        new = torch.nn.Linear(32, 16)
        keep = torch.cat([torch.arange(0, 8), torch.arange(16, 24)])
        new.weight.data, new.bias.data = old.weight.data[keep].clone(), old.bias.data[keep].clone()
        setattr(layer, name, new)
    old = layer.o_proj
    new = torch.nn.Linear(16, 32)
    new.weight.data, new.bias.data = old.weight.data[:, keep].clone(), old.bias.data.clone()
    layer.o_proj = new
    assert sync_heads(model)[find_attention(model)[0].name] == 2
    inputs = torch.randn(2, 3, 32, 32)
    save_pretrained(model, tmp_path / "pruned")
    again = from_pretrained(tmp_path / "pruned")
    assert torch.allclose(model(inputs).logits, again(inputs).logits, atol=1e-6)


@pytest.mark.parametrize("model, extra, message", [
    ("tv:resnet_nonexistent", (), "unknown torchvision model 'resnet_nonexistent'"),
    ("tv:resnet18", ("--pretrained",), "has ImageNet's 1000 classes but the data has 10"),
    ("{vit}", ("--weights", "w.safetensors"), "holds its weights: drop --weights"),
    ("{vit3}", (), "has 3 classes, but --data digits has 10"),
    ("{empty}", (), "is a directory without a config.json"),
])
def test_a_bad_model_is_refused_by_name_before_any_work(tmp_path, capsys, model, extra, message):
    (tmp_path / "empty").mkdir()
    paths = {"vit": tiny_vit_directory(tmp_path / "vit"),
             "vit3": tiny_vit_directory(tmp_path / "vit3", labels=3), "empty": tmp_path / "empty"}
    assert search(tmp_path, model.format(**paths), "digits", *extra) == 2
    assert message in capsys.readouterr().err
    assert no_study_under(tmp_path)
