"""A small Llama-style decoder trained briefly on local text, then searched by autoprune.

    python reports/benchmarks/llama-stdlib-text-cpu/run.py --train-minutes 4 --budget 6m

The text is the documentation of Python's standard library (autoprune.integrations.text_data),
tokenized by a byte-level BPE trained on it. The model: Llama, hidden 256, 4 layers, 8 query
heads sharing 2 key/value heads, SwiGLU 768, tied embeddings. It is trained from scratch with
AdamW for `--train-minutes` (cached in reports/models), then `autoprune.search` prunes whole
key/value groups and the MLP width per layer, and whole decoder layers, scored by validation
perplexity, timed reading a batch of prompts and generating `--decode-tokens` tokens with the
KV cache.
"""

import argparse
import time
from pathlib import Path

import torch
import transformers

import autoprune
from autoprune.integrations.text_data import text_loaders
from autoprune.runtime.language_model import causal_lm_loss, perplexity
from autoprune.runtime.finetune import Distillation
from autoprune.study.options import SearchOptions

parser = argparse.ArgumentParser()
parser.add_argument("--train-minutes", type=float, default=4.0)
parser.add_argument("--budget", default="6m")
parser.add_argument("--decode-tokens", type=int, default=16)
parser.add_argument("--lm-latency", default="decode", choices=("decode", "generate", "prefill"))
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--study-name", default=None, help="default: llama-stdlib-seed<seed>")
args = parser.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(args.seed)

train, val, vocabulary = text_loaders(length=64, batch_size=16, tokens="bpe", vocab_size=2048)
config = transformers.LlamaConfig(vocab_size=vocabulary, hidden_size=256, intermediate_size=768,
                                  num_hidden_layers=4, num_attention_heads=8,
                                  num_key_value_heads=2, max_position_embeddings=256,
                                  tie_word_embeddings=True)
cache = Path(f"reports/models/llama-stdlib-{args.train_minutes:g}min")
if (cache / "config.json").is_file():
    model = autoprune.huggingface.from_pretrained(cache)
    print(f"using the cached model {cache}")
else:
    model = transformers.LlamaForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    started, steps = time.perf_counter(), 0
    model.train()
    while time.perf_counter() - started < 60 * args.train_minutes:
        for batch in train:
            loss = causal_lm_loss(model, model, batch, Distillation(alpha=0.0))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
            if time.perf_counter() - started > 60 * args.train_minutes:
                break
    model.eval()
    autoprune.huggingface.save_pretrained(model, cache)
    print(f"trained {steps} steps in {time.perf_counter() - started:.0f} s")
params = sum(p.numel() for p in model.parameters())
print(f"{params / 1e6:.2f} M parameters, vocabulary {vocabulary}, "
      f"{len(train.dataset)} train and {len(val.dataset)} validation blocks of 64 tokens")
print(f"unpruned validation perplexity {perplexity(model, val, 'cpu'):.2f}")

result = autoprune.search(model, budget=args.budget, train=train, val=val, threads=args.threads,
                          study_name=args.study_name or f"llama-stdlib-seed{args.seed}",
                          seed=args.seed,
                          options=SearchOptions(decode_tokens=args.decode_tokens,
                                                lm_latency=args.lm_latency))
batch = next(iter(val))[0].shape[0]
final = result.study.user_attrs.get("final_latency_ms") or {}
timed = {"decode": f"{args.decode_tokens} new tokens", "prefill": "the prompt batch",
         "generate": f"the prompt batch + {args.decode_tokens} tokens"}[args.lm_latency]
print(f"unpruned: perplexity {result.baseline['accuracy']:.2f}, "
      f"{final.get('baseline', result.baseline['latency_ms']):.1f} ms per {timed} "
      f"({batch} sequences)")
print("| trial | perplexity | latency ms | speedup | tokens/s | parameters | layers | "
      "KV groups kept |")
print("|---|---|---|---|---|---|---|---|")
for c in result.pareto:
    kept = result.study.trials[c.trial].user_attrs.get("kept_channels") or {}
    groups = [v // (256 // 8) for k, v in kept.items() if k.endswith("k_proj")]
    print(f"| {c.trial} | {c.accuracy:.2f} | {c.latency_ms:.1f} | {c.speedup:.2f}x | "
          f"{batch * args.decode_tokens / c.latency_ms * 1e3:.0f} | {c.params / 1e6:.2f} M | "
          f"{len(groups)} | {groups} |")
print(f"report: {result.report_path}")
