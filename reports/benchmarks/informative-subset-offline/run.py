"""Offline check of issue #13's data lever: does fine-tuning on the teacher's least confident
training examples recover a pruned ResNet-18 faster than the shuffled training set?

Hard digits (seed 0), the cached 10-epoch ResNet-18 of the benchmarks (`autoprune bench
--model resnet18 --data digits-hard --train-epochs 10` trains and caches it), uniform L2 cuts
at 0.6 and 0.8, 60 SGD steps (lr 0.01, cosine, KD alpha 0.5 at T 4), 3 seeds; accuracy on
1,349 held-out images at step 20 (where the early-stop screen looks) and at step 60.
Run from the repository root: python reports/benchmarks/informative-subset-offline/run.py
"""

import copy

import torch
import torch_pruning as tp
from torch.utils.data import DataLoader, TensorDataset

from autoprune.integrations.bundled_data import bundled_datasets
from autoprune.integrations.models import load_named_checkpoint
from autoprune.runtime.evaluate import evaluate
from autoprune.runtime.finetune import Distillation, finetune

STEPS, SCREEN, BATCH = 60, 20, 32
torch.set_num_threads(2)
teacher = load_named_checkpoint("reports/models/resnet18-digits-hard-10ep.safetensors").eval()
train, held = bundled_datasets("digits-hard", seed=0)
x, y = train.tensors
val = DataLoader(TensorDataset(*[t[:1349] for t in held.tensors]), batch_size=128)

# the teacher's margin on each training example: its probability of the true class minus
# the largest other one; the least confident half is the "informative" subset
with torch.no_grad():
    probs = torch.cat([teacher(x[i:i + 256]).softmax(-1) for i in range(0, len(x), 256)])
rows = torch.arange(len(y))
others = probs.clone()
others[rows, y] = -1
margin = probs[rows, y] - others.max(-1).values
order = margin.argsort()
hard, easy = order[:len(y) // 2], order[len(y) // 2:]
print(f"teacher: train accuracy {(probs.argmax(-1) == y).float().mean():.3f}, held-out "
      f"{evaluate(teacher, val, 'cpu'):.3f}; margin at the 10/25/50th percentile "
      f"{[round(margin.quantile(q).item(), 3) for q in (0.1, 0.25, 0.5)]}")


def batches(indices, steps, seed):
    """`steps` shuffled batches drawn from `indices`, epoch after epoch."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    while len(out) < steps:
        perm = indices[torch.randperm(len(indices), generator=generator)]
        out += [(x[perm[i:i + BATCH]], y[perm[i:i + BATCH]])
                for i in range(0, len(perm) - BATCH + 1, BATCH)]
    return out[:steps]


everything = torch.arange(len(y))
regimes = {
    "random": lambda seed: batches(everything, STEPS, seed),
    "hard first 20": lambda seed: batches(hard, SCREEN, seed) + batches(everything, STEPS - SCREEN,
                                                                       seed + 100),
    "hard all 60": lambda seed: batches(hard, STEPS, seed),
    "easy all 60": lambda seed: batches(easy, STEPS, seed),
}
for ratio in (0.6, 0.8):
    for name, make in regimes.items():
        at_screen, at_end = [], []
        for seed in range(3):
            torch.manual_seed(seed)
            student = copy.deepcopy(teacher)
            tp.pruner.MetaPruner(student, x[:2],
                                 importance=tp.importance.GroupMagnitudeImportance(p=2),
                                 pruning_ratio=ratio,
                                 ignored_layers=[student.get_classifier()]).step()
            seen = {}

            def screen(step, student=student):
                if step == SCREEN:
                    seen["screen"] = evaluate(student, val, "cpu")
                return False

            finetune(student, teacher, make(seed), STEPS, 0.01, Distillation(0.5, 4.0), "cpu",
                     optimizer="sgd", on_step=screen)
            at_screen.append(seen["screen"])
            at_end.append(evaluate(student, val, "cpu"))
        print(f"ratio {ratio} {name:13s} step {SCREEN}: {sum(at_screen) / 3:.3f} "
              f"{[round(a, 3) for a in at_screen]}  step {STEPS}: {sum(at_end) / 3:.3f} "
              f"{[round(a, 3) for a in at_end]}", flush=True)
