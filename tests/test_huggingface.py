"""HuggingFace transformers: search with dict inputs, heads pruned, save_pretrained round trip."""

from __future__ import annotations

import pytest
import torch
from tiny_models import QUICK
from torch.utils.data import DataLoader, Dataset

import autoprune
from autoprune.pruning.attention import find_attention, head_count
from autoprune.pruning.grouping import ignored_modules, plan_dimensions
from autoprune.pruning.prune import prune_copy
from autoprune.study.space import resolve_search_space

transformers = pytest.importorskip("transformers")
from autoprune import huggingface  # noqa: E402  (needs transformers)


def tiny_bert() -> torch.nn.Module:
    config = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=64,
                                     max_position_embeddings=32, num_labels=3)
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(config).eval()


class TokenTask(Dataset):
    """Learnable: the label is the first token's id modulo 3."""

    def __init__(self, samples: int = 48, length: int = 12, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, 50, (samples, length), generator=generator)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        ids = self.ids[i]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, ids[0] % 3


def _loaders():
    data = TokenTask()
    return (DataLoader(data, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0)),
            DataLoader(data, batch_size=8))


def _inputs(batch: int = 4):
    ids = torch.randint(0, 50, (batch, 12), generator=torch.Generator().manual_seed(1))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _pruned(model, sparsity_by_kind, sparsity_by_name=None):
    inputs = _inputs()
    space = resolve_search_space(model, None)
    ignored = ignored_modules(model, inputs, space.ignored_layers)
    dims = plan_dimensions(model, inputs, space.stage_pattern, space.max_dimensions, ignored)
    names = [n for n, m in model.named_modules() if m in ignored]
    sparsity = {d.name: sparsity_by_kind.get(d.kind, 0.0) for d in dims}
    sparsity.update(sparsity_by_name or {})
    return prune_copy(model, inputs, dims, sparsity, "l2", names, space.round_to).model


def _search(model, tmp_path, name: str, trials: int, steps: int):
    train, val = _loaders()
    return autoprune.search(model, options=QUICK, trials=trials, train=train, val=val, finetune_steps=steps,
                            output_dir=tmp_path, study_name=name, verbose=False,
                            write_report=False, threads=1)


def test_search_on_a_bert_classifier_prunes_heads_and_reads_logits(tmp_path):
    result = _search(tiny_bert(), tmp_path, "bert", trials=4, steps=3)
    assert result.study.user_attrs["settings"]["space"]["family"] == "hf_encoder"
    assert result.pareto
    pruned = result.load(result.pareto[0].trial)
    output = pruned(**_inputs())
    assert output.logits.shape == (4, 3)


def test_save_pretrained_round_trips_per_layer_heads_and_widths(tmp_path):
    model = tiny_bert()
    pruned = _pruned(model, {"heads": 0.5, "inner": 0.5})
    heads = [head_count(pruned, a) for a in find_attention(pruned)]
    assert heads == [2, 2]
    huggingface.save_pretrained(pruned, tmp_path / "bert")
    loaded = huggingface.from_pretrained(tmp_path / "bert")
    assert [head_count(loaded, a) for a in find_attention(loaded)] == heads
    with torch.no_grad():
        assert torch.equal(pruned(**_inputs()).logits, loaded(**_inputs()).logits)


def test_intermediate_only_pruning_loads_with_plain_from_pretrained(tmp_path):
    model = tiny_bert()
    pruned = _pruned(model, {"inner": 0.5})
    huggingface.save_pretrained(pruned, tmp_path / "bert")
    plain = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "bert").eval()
    assert plain.config.intermediate_size == 32
    with torch.no_grad():
        assert torch.equal(pruned(**_inputs()).logits, plain(**_inputs()).logits)


def tiny_gpt2() -> torch.nn.Module:
    config = transformers.GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=4, n_inner=64,
                                     n_positions=32, num_labels=3, pad_token_id=0)
    torch.manual_seed(0)
    return transformers.GPT2ForSequenceClassification(config).eval()


@pytest.mark.parametrize("plain", [True, False])
def test_gpt2_conv1d_model_prunes_and_round_trips_in_its_own_layout(tmp_path, plain):
    from autoprune.pruning.conversions import prepare

    original = tiny_gpt2()
    model = prepare(original)
    assert model is not original and original.config.use_cache  # the user's model is untouched
    with torch.no_grad():  # the Conv1D -> Linear swap keeps the outputs
        assert torch.allclose(original(**_inputs()).logits, model(**_inputs()).logits, atol=1e-6)
    # plain: one MLP width for all layers, which the config's n_inner describes; else
    # per-layer widths, which only autoprune's loader rebuilds
    pruned = _pruned(model, {"inner": 0.5},
                     None if plain else {"transformer.h.1.inner": 0.25})
    huggingface.save_pretrained(pruned, tmp_path / "gpt2")
    saved = transformers.AutoConfig.from_pretrained(tmp_path / "gpt2")
    assert saved.autoprune_shapes["conv1d"]
    assert saved.n_inner == (32 if plain else 64)
    loader = (transformers.GPT2ForSequenceClassification.from_pretrained if plain
              else huggingface.from_pretrained)
    loaded = loader(tmp_path / "gpt2").eval()
    assert type(loaded.transformer.h[0].mlp.c_fc).__name__ == "Conv1D"
    with torch.no_grad():
        assert torch.allclose(pruned(**_inputs()).logits, loaded(**_inputs()).logits, atol=1e-6)


def test_search_on_gpt2_then_save_pretrained_loads_in_transformers_layout(tmp_path):
    result = _search(tiny_gpt2(), tmp_path, "gpt2", trials=3, steps=2)
    assert result.study.user_attrs["settings"]["space"]["family"] == "hf_decoder"
    pruned = result.load(result.pareto[0].trial)
    huggingface.save_pretrained(pruned, tmp_path / "export")
    loaded = huggingface.from_pretrained(tmp_path / "export")
    with torch.no_grad():
        assert torch.allclose(pruned(**_inputs()).logits, loaded(**_inputs()).logits, atol=1e-6)
