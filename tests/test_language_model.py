"""Decoder language models: Llama-style grouped-query attention pruned by whole key/value
groups, the MLP width per layer, the causal-LM task (perplexity, next-token loss with
distillation) and the local text it trains on. Tiny models built from configs; nothing is
downloaded."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from autoprune.runtime.finetune import Distillation
from autoprune.runtime.language_model import causal_lm_loss, is_causal_lm, kv_cache, perplexity

transformers = pytest.importorskip("transformers")

VOCAB = 256


def tiny_decoder(family: str = "llama", heads: int = 8, kv_heads: int = 2, layers: int = 2,
                 tie: bool = False) -> nn.Module:
    """A Llama, Qwen2 or Mistral causal LM of a few hundred thousand parameters."""
    config_class, model_class = {
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
        "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
        "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
    }[family]
    config = config_class(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                          num_hidden_layers=layers, num_attention_heads=heads,
                          num_key_value_heads=kv_heads, max_position_embeddings=128,
                          tie_word_embeddings=tie)
    torch.manual_seed(0)
    return model_class(config).eval()


def token_batches(count: int = 4, batch: int = 4, length: int = 16, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        ids = torch.randint(0, VOCAB, (batch, length), generator=generator)
        batches.append((ids, ids.clone()))
    return batches


class Uniform(nn.Module):
    """Equal logits for every token: perplexity is the vocabulary size."""

    def __init__(self, vocabulary: int):
        super().__init__()
        self.vocabulary = vocabulary
        self.unused = nn.Parameter(torch.zeros(()))

    def forward(self, input_ids):
        return torch.zeros(*input_ids.shape, self.vocabulary)


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size():
    batches = token_batches()
    assert perplexity(Uniform(VOCAB), batches, "cpu") == pytest.approx(VOCAB, rel=1e-5)
    padded = [(ids, torch.where(torch.arange(ids.shape[1]) < 8, labels, -100))
              for ids, labels in batches]  # positions labelled -100 are not scored
    assert perplexity(Uniform(VOCAB), padded, "cpu") == pytest.approx(VOCAB, rel=1e-5)


def test_the_next_token_loss_is_the_one_transformers_computes():
    model = tiny_decoder()
    ids, labels = token_batches(1)[0]
    labels[:, :3] = -100
    ours = causal_lm_loss(model, model, (ids, labels), Distillation(alpha=0.0))
    theirs = model(input_ids=ids, labels=labels).loss
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
    # distilling from itself adds nothing: the KL term is zero
    distilled = causal_lm_loss(model, model, (ids, labels), Distillation(alpha=1.0))
    assert distilled.item() == pytest.approx(0.0, abs=1e-5)
    assert is_causal_lm(model) and not is_causal_lm(Uniform(VOCAB))


def _groups(model):
    """(query heads, key/value heads) per layer, read from the projections."""
    counts = []
    for layer in model.model.layers:
        attention = layer.self_attn
        counts.append((attention.q_proj.out_features // attention.head_dim,
                       attention.k_proj.out_features // attention.head_dim))
    return counts


@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral"])
def test_a_decoder_loses_whole_key_value_groups_and_still_generates(family, tmp_path):
    from autoprune.huggingface import from_pretrained, save_pretrained
    from autoprune.runtime.measure import count_macs_and_params
    from autoprune.store.checkpoint import load_checkpoint, save_checkpoint
    from autoprune.study.config import config_from_params, uniform_params
    from autoprune.study.preflight import preflight
    from autoprune.study.prepared import PreparedModel
    from autoprune.study.space import resolve_search_space

    model = tiny_decoder(family)
    ids, labels = token_batches(1)[0]
    space = resolve_search_space(model, None).for_target("cpu", ("fp32",))
    assert space.family == "hf_llama"
    prepared = PreparedModel.build(model, ids, space)
    assert {"heads", "inner"} <= {d.kind for d in prepared.dimensions}
    preflight(prepared)
    config = config_from_params(uniform_params(space, prepared.dimensions, 0.5),
                                prepared.dimensions, space)
    result = prepared.prune(config.sparsity, "l2")
    pruned = result.model

    for queries, keys in _groups(pruned):  # half of the 2 groups go: 4 query heads, 1 kv head
        assert (queries, keys) == (4, 1)
    assert all(layer.mlp.gate_proj.out_features < 128 for layer in pruned.model.layers)
    assert count_macs_and_params(pruned, ids)[1] < count_macs_and_params(prepared.model, ids)[1]

    pruned.train()
    loss = causal_lm_loss(pruned, prepared.model, (ids, labels), Distillation())
    loss.backward()
    assert all(p.grad is not None for p in pruned.parameters() if p.requires_grad)
    pruned.eval()

    prompt = ids[:2, :5]
    with torch.no_grad():
        cached = pruned.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=True)
        uncached = pruned.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=False)
    assert cached.shape == (2, 11) and torch.equal(cached, uncached)

    with torch.no_grad():
        expected = pruned(ids).logits
    loaded = load_checkpoint(save_checkpoint(tmp_path / "ckpt", pruned, prepared.model,
                                             result.history, ids), prepared.model)
    directory = save_pretrained(pruned, tmp_path / "hf")
    reloaded = from_pretrained(directory)
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, expected)
        assert torch.allclose(reloaded(ids).logits, expected, atol=1e-6)
        assert torch.equal(reloaded.generate(prompt, max_new_tokens=6, do_sample=False), cached)


def test_local_text_is_split_into_disjoint_blocks_of_tokens():
    from autoprune.integrations.text_data import text_loaders

    train, val, vocabulary = text_loaders(length=32, batch_size=8, max_tokens=20_000)
    assert vocabulary == 256
    ids, labels = next(iter(train))
    assert ids.shape == (8, 32) and torch.equal(ids, labels) and int(ids.max()) < 256
    held_out = {tuple(row.tolist()) for batch, _ in val for row in batch}
    trained = {tuple(row.tolist()) for batch, _ in train for row in batch}
    assert len(held_out) > 0 and not held_out & trained
    _, _, bpe_vocabulary = text_loaders(length=32, tokens="bpe", vocab_size=300,
                                        max_tokens=5_000)
    assert 256 < bpe_vocabulary <= 300


def test_a_search_of_a_causal_lm_minimizes_perplexity(tmp_path):
    import autoprune
    from autoprune.integrations.text_data import text_loaders
    from tiny_models import QUICK

    train, val, _ = text_loaders(length=32, batch_size=8, max_tokens=30_000)
    model = tiny_decoder()
    result = autoprune.search(model, trials=3, train=train, val=val, output_dir=tmp_path,
                              finetune_steps=2, threads=1, verbose=False, options=QUICK)
    assert result.metric["name"] == "perplexity" and result.metric["direction"] == "minimize"
    done = [t for t in result.study.trials if t.state.name == "COMPLETE"]
    assert done and all(math.isfinite(t.values[0]) and t.values[0] > 1 for t in done)
    assert all("depth" in t.params for t in done)  # whole layers are searched too
    pick = result.pareto[0]
    reloaded = result.load(pick)
    assert perplexity(reloaded, val, "cpu") == pytest.approx(pick.accuracy, rel=1e-4)


def test_a_causal_lm_is_timed_decoding_with_the_cache_after_its_prompt():
    from autoprune.targets import get_target

    model = tiny_decoder()
    calls = []  # (tokens read, cache length before the pass)
    model.model.register_forward_hook(
        lambda module, args, kwargs, output: calls.append(
            (kwargs["input_ids"].shape[1], None if kv_cache(output) is None else
             kv_cache(output).get_seq_length() - kwargs["input_ids"].shape[1])),
        with_kwargs=True)
    target = get_target("cpu", "cpu", 1)
    target.decode_tokens = 3
    assert target.lm_latency == "decode"  # the default: decode throughput
    prompt = token_batches(1)[0][0]
    with torch.no_grad():
        decode = target.runnable(model, prompt)
        assert calls == [(16, 0)]  # the prompt is read once, when the runnable is made
        calls.clear()
        decode()
        decode()
    # each call: one pass per new token over the cache, then the cache is cut back to the
    # prompt, so the second call does the same work as the first
    assert calls == [(1, 16), (1, 17), (1, 18)] * 2
    calls.clear()
    target.lm_latency = "generate"
    with torch.no_grad():
        target.runnable(model, prompt)()
    # one pass over the 16-token prompt, then one per new token over the growing cache
    assert calls == [(16, 0), (1, 16), (1, 17), (1, 18)]
    calls.clear()
    target.lm_latency = "prefill"
    with torch.no_grad():
        target.runnable(model, prompt)()
    assert calls == [(16, None)]  # the prompt alone, no cache kept


def test_a_causal_lm_on_the_onnxruntime_target_is_refused_before_any_work(tmp_path):
    import autoprune
    from autoprune.errors import InvalidInputError

    pytest.importorskip("onnxruntime")
    batches = token_batches()
    with pytest.raises(InvalidInputError, match="causal LM"):
        autoprune.search(tiny_decoder(), trials=1, train=batches, val=batches,
                         target="onnxruntime", output_dir=tmp_path, verbose=False)
    assert not list(tmp_path.rglob("study.db"))


def test_a_decoder_pruned_alike_in_every_layer_loads_with_plain_transformers(tmp_path):
    """Only the MLP width, the same in every layer: the config describes the pruned model."""
    from autoprune.huggingface import save_pretrained
    from autoprune.study.prepared import PreparedModel
    from autoprune.study.space import resolve_search_space

    model = tiny_decoder("qwen2")
    ids = token_batches(1)[0][0]
    prepared = PreparedModel.build(model, ids, resolve_search_space(model, None))
    sparsity = {d.name: 0.5 if d.kind == "inner" else 0.0 for d in prepared.dimensions}
    pruned = prepared.prune(sparsity, "l2").model.eval()
    directory = save_pretrained(pruned, tmp_path / "hf")
    plain = transformers.AutoModelForCausalLM.from_pretrained(directory).eval()
    assert plain.config.intermediate_size == 64
    with torch.no_grad():
        assert torch.allclose(plain(ids).logits, pruned(ids).logits, atol=1e-6)


def test_gpt2_loses_whole_heads_of_its_fused_projection_and_still_generates(tmp_path):
    from autoprune.huggingface import from_pretrained, save_pretrained
    from autoprune.pruning.conversions import prepare
    from autoprune.study.prepared import PreparedModel
    from autoprune.study.space import resolve_search_space

    config = transformers.GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=8,
                                     n_inner=128, n_positions=64)
    torch.manual_seed(0)
    model = prepare(transformers.GPT2LMHeadModel(config).eval())
    ids = token_batches(1)[0][0]
    prepared = PreparedModel.build(model, ids, resolve_search_space(model, None))
    sparsity = {d.name: 0.5 if d.kind == "heads" else 0.0 for d in prepared.dimensions}
    pruned = prepared.prune(sparsity, "l2").model.eval()
    for block in pruned.transformer.h:  # 4 of 8 heads of 8 dimensions: a third of c_attn each
        assert block.attn.num_heads == 4 and block.attn.split_size == 32
        assert block.attn.c_attn.out_features == 96 and block.attn.c_proj.in_features == 32
    prompt = ids[:2, :5]
    with torch.no_grad():
        cached = pruned.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=True)
        uncached = pruned.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=False)
        assert torch.equal(cached, uncached)
        reloaded = from_pretrained(save_pretrained(pruned, tmp_path / "gpt2"))
        assert torch.allclose(reloaded(ids).logits, pruned(ids).logits, atol=1e-6)


def _identity_block(model, index: int) -> None:
    """Zero the layer's residual writes (attention and MLP output projections): the block
    returns its input unchanged, so its block influence is 0."""
    block = (model.transformer.h if hasattr(model, "transformer") else model.model.layers)[index]
    writes = ((block.attn.c_proj, block.mlp.c_proj) if hasattr(block, "attn")
              else (block.self_attn.o_proj, block.mlp.down_proj))
    with torch.no_grad():
        for layer in writes:
            layer.weight.zero_()
            if layer.bias is not None:
                layer.bias.zero_()


def _tiny_gpt2(layers: int = 4) -> nn.Module:
    from autoprune.pruning.conversions import prepare

    config = transformers.GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=layers, n_head=8,
                                     n_inner=128, n_positions=64)
    torch.manual_seed(0)
    return prepare(transformers.GPT2LMHeadModel(config).eval())


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2"])
def test_depth_pruning_removes_the_least_influential_layers_and_still_generates(family,
                                                                                 tmp_path):
    from autoprune.huggingface import from_pretrained, save_pretrained
    from autoprune.pruning.depth import DEPTH
    from autoprune.store.checkpoint import load_checkpoint, save_checkpoint
    from autoprune.study.preflight import preflight
    from autoprune.study.prepared import PreparedModel
    from autoprune.study.space import resolve_search_space

    model = _tiny_gpt2() if family == "gpt2" else tiny_decoder(family, layers=4)
    _identity_block(model, 2)
    ids = token_batches(1)[0][0]
    space = resolve_search_space(model, None).for_target("cpu", ("fp32",))
    assert space.depth == (0.0, 0.5)
    prepared = PreparedModel.build(model, ids, space)
    assert prepared.block_order[0] == 2  # the block that changes nothing goes first
    preflight(prepared)
    with torch.no_grad():
        unpruned = prepared.model(ids).logits

    shallower = prepared.prune({DEPTH: 0.25}, "l2")
    pruned = shallower.model.eval()
    stack = pruned.transformer.h if family == "gpt2" else pruned.model.layers
    attention = [b.attn if family == "gpt2" else b.self_attn for b in stack]
    assert len(stack) == pruned.config.num_hidden_layers == 3
    assert [a.layer_idx for a in attention] == [0, 1, 2]  # their KV-cache slots
    if family == "qwen2":
        assert len(pruned.config.layer_types) == 3
    assert model.config.num_hidden_layers == 4  # the user's model is left whole
    with torch.no_grad():  # an identity block removed: the same function
        assert torch.allclose(pruned(ids).logits, unpruned, atol=1e-5)
        prompt = ids[:2, :5]
        cached = pruned.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=True)
        uncached = pruned.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=False)
        assert torch.equal(cached, uncached)
        plain = transformers.AutoModelForCausalLM.from_pretrained(
            save_pretrained(pruned, tmp_path / "plain")).eval()
        assert torch.allclose(plain(ids).logits, pruned(ids).logits, atol=1e-5)

    # with widths cut too: autoprune's checkpoint and save_pretrained round trips
    sparsity = {d.name: 0.5 for d in prepared.dimensions if d.kind in ("heads", "inner")}
    result = prepared.prune({**sparsity, DEPTH: 0.5}, "l2")
    both = result.model.eval()
    assert both.config.num_hidden_layers == 2
    loaded = load_checkpoint(save_checkpoint(tmp_path / "ckpt", both, prepared.model,
                                             result.history, ids), prepared.model)
    reloaded = from_pretrained(save_pretrained(both, tmp_path / "hf"))
    with torch.no_grad():
        expected = both(ids).logits
        assert torch.equal(loaded(ids).logits, expected)
        assert torch.allclose(reloaded(ids).logits, expected, atol=1e-6)
        assert torch.equal(reloaded.generate(ids[:2, :5], max_new_tokens=6, do_sample=False),
                           both.generate(ids[:2, :5], max_new_tokens=6, do_sample=False))


def test_the_latency_model_predicts_removed_layers_faster():
    import optuna

    from autoprune.pruning.depth import DEPTH
    from autoprune.study.latency import study_latency_model
    from autoprune.study.prepared import PreparedModel
    from autoprune.study.space import resolve_search_space
    from autoprune.targets import get_target

    model = tiny_decoder(layers=4)
    ids = token_batches(1)[0][0]
    prepared = PreparedModel.build(model, ids, resolve_search_space(model, None))
    latency = study_latency_model(optuna.create_study(), prepared, get_target("cpu", "cpu", 1),
                                  calibration_points=6, rounds=3, block_seconds=0.005)
    assert latency.blocks == [f"model.layers.{i}" for i in prepared.block_order]
    assert len(latency.coefficients) == 4  # a, b, c and the kept layers' share d
    table, _ = latency.features({})
    half_table, _ = latency.features({DEPTH: 0.5})
    assert half_table < 0.75 * table  # two of four layers' projections leave the table
    assert latency.relative({DEPTH: 0.5}) < latency.relative({DEPTH: 0.25}) < latency.relative({})


def test_depth_asked_of_a_model_without_decoder_layers_is_refused_before_any_work(tmp_path):
    import autoprune
    from autoprune.errors import SearchSpaceError
    from tiny_models import TinyResNet, tiny_data

    space = tmp_path / "deep.yaml"
    space.write_text("family: deep\nsparsity:\n  depth: [0.0, 0.5]\n")
    train, val = tiny_data()
    with pytest.raises(SearchSpaceError, match="no layer stack"):
        autoprune.search(TinyResNet(), trials=1, train=train, val=val, search_space=space,
                         output_dir=tmp_path, verbose=False)
    assert not list(tmp_path.rglob("study.db"))


def _saved_decoder_with_tokenizer(directory, text: str):
    """A tiny Llama saved with a byte-level BPE tokenizer trained on `text` beside it."""
    from autoprune.integrations.text_data import byte_level_bpe

    bpe = byte_level_bpe(text, vocab_size=300)
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer)
    config = transformers.LlamaConfig(vocab_size=bpe.get_vocab_size(), hidden_size=64,
                                      intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=8, num_key_value_heads=2,
                                      max_position_embeddings=64)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def test_the_command_line_searches_a_causal_lm_on_a_text_file_in_its_own_tokens(tmp_path,
                                                                                  capsys):
    import optuna

    from autoprune.cli import main
    from autoprune.integrations.text_data import standard_library_text

    text = standard_library_text(["json", "csv"])
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text)
    model_dir = _saved_decoder_with_tokenizer(tmp_path / "llama", text)
    common = ["search", "--model", str(model_dir), "--trials", "2", "--seq-len", "16",
              "--batch-size", "4", "--finetune-steps", "2", "--threads", "1",
              "--output-dir", str(tmp_path / "runs"), "--study-name", "lm"]

    # an image task for a language model, or text without a tokenizer: refused before any work
    assert main([*common, "--data", "digits"]) == 2
    assert "causal language model" in capsys.readouterr().err
    bare = tmp_path / "bare"
    transformers.LlamaForCausalLM.from_pretrained(model_dir).save_pretrained(bare)
    assert main([*common[:2], str(bare), *common[3:], "--data", str(corpus)]) == 2
    assert "no tokenizer" in capsys.readouterr().err
    assert not list((tmp_path / "runs").rglob("study.db"))

    assert main([*common, "--data", str(corpus)]) == 0
    study = optuna.load_study(study_name="lm",
                              storage=f"sqlite:///{tmp_path / 'runs' / 'lm' / 'study.db'}")
    assert study.directions[0] == optuna.study.StudyDirection.MINIMIZE  # perplexity
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 2 and all(t.values[0] > 1 for t in done)
    assert "perplexity" in capsys.readouterr().err


def test_a_causal_lm_study_is_not_resumed_with_another_latency(tmp_path):
    """A decode latency and a generate latency must not meet in one study's front."""
    from dataclasses import replace

    import autoprune
    from autoprune.errors import InvalidInputError
    from tiny_models import QUICK

    batches = token_batches()
    settings = dict(trials=1, train=batches, val=batches, output_dir=tmp_path, study_name="lm",
                    finetune_steps=1, threads=1, verbose=False, write_report=False)
    autoprune.search(tiny_decoder(), options=replace(QUICK, lm_latency="generate"), **settings)
    with pytest.raises(InvalidInputError, match="lm_timing"):
        autoprune.search(tiny_decoder(), options=QUICK, **settings)
