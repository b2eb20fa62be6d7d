"""What int8 adds on top of pruning in ONNX Runtime on this CPU: uniform pruning at a few
ratios, a brief distillation fine-tune, then static int8 quantization (QDQ, per-channel,
min-max on 8 training batches) of each point; accuracy on the 2,697 held-out digits-hard
images and paired ONNX Runtime latency (fp32 and int8, against the unpruned fp32 model).

    python reports/benchmarks/int8-uniform-digits-hard-cpu/run.py --models resnet18,regnetx_002

Uses the digits-hard models cached by `autoprune bench --data digits-hard --train-epochs 10`.
"""

import argparse
import statistics
import time

import torch

from autoprune.integrations.bundled_data import bundled_loaders
from autoprune.integrations.models import load_named_checkpoint
from autoprune.pruning.conversions import prepare
from autoprune.pruning.grouping import ignored_modules, plan_dimensions
from autoprune.pruning.prune import prune_copy
from autoprune.runtime.evaluate import evaluate
from autoprune.runtime.finetune import Distillation, finetune
from autoprune.runtime.measure import count_macs_and_params, paired_latency
from autoprune.runtime.quantize import OnnxModule, calibration_inputs, quantize_int8
from autoprune.study.config import config_from_params, uniform_params
from autoprune.study.space import resolve_search_space
from autoprune.targets import get_target

parser = argparse.ArgumentParser()
parser.add_argument("--models", default="resnet18,regnetx_002")
parser.add_argument("--ratios", default="0,0.3,0.5,0.7")
parser.add_argument("--steps", type=int, default=120)
parser.add_argument("--threads", type=int, default=2)
args = parser.parse_args()
torch.set_num_threads(args.threads)
train, val = bundled_loaders("digits-hard", batch_size=32)
target = get_target("onnxruntime", "cpu", args.threads)
calibration = calibration_inputs(train, 8)

print("| model | ratio | MACs | fp32 acc | int8 acc | fp32 speedup | int8 speedup | "
      "int8 over fp32 |")
print("|---|---|---|---|---|---|---|---|")
for name in args.models.split(","):
    torch.manual_seed(0)
    model = prepare(load_named_checkpoint(
        f"reports/models/{name}-digits-hard-10ep.safetensors").eval())
    inputs = next(iter(val))[0]
    space = resolve_search_space(model, None)
    ignored = ignored_modules(model, inputs, space.ignored_layers)
    names = [n for n, m in model.named_modules() if m in ignored]
    dims = plan_dimensions(model, inputs, space.stage_pattern, space.max_dimensions, ignored)
    base_macs, _ = count_macs_and_params(model, inputs)
    for ratio in [float(r) for r in args.ratios.split(",")]:
        torch.manual_seed(0)
        if ratio:
            config = config_from_params(uniform_params(space, dims, ratio), dims, space)
            pruned = prune_copy(model, inputs, dims, config.sparsity, "l2", names,
                                space.round_to).model
            finetune(pruned, model, train, args.steps, config.lr, Distillation(), "cpu",
                     optimizer=space.optimizer)
        else:
            pruned = model
        pruned.eval()
        macs, _ = count_macs_and_params(pruned, inputs)
        fp32_accuracy = evaluate(pruned, val, "cpu")
        start = time.perf_counter()
        int8 = OnnxModule(quantize_int8(pruned, inputs, calibration), args.threads)
        quantize_seconds = time.perf_counter() - start
        int8_accuracy = evaluate(int8, val, "cpu")
        fp32_speedups, int8_speedups, gains = [], [], []
        for _ in range(2):  # twice, interleaved: how stable the ratios are
            fp32_speedups.append(paired_latency(pruned, model, inputs, target, 15, 0.1).speedup)
            int8_speedups.append(paired_latency(int8, model, inputs, target, 15, 0.1).speedup)
            gains.append(paired_latency(int8, pruned, inputs, target, 15, 0.1).speedup)
        span = lambda values: f"{min(values):.2f}-{max(values):.2f}x"  # noqa: E731
        print(f"| {name} | {ratio} | {base_macs / macs:.2f}x | {100 * fp32_accuracy:.2f} | "
              f"{100 * int8_accuracy:.2f} | {span(fp32_speedups)} | {span(int8_speedups)} | "
              f"{span(gains)} |", flush=True)
        print(f"<!-- {name} {ratio}: quantized in {quantize_seconds:.1f} s -->", flush=True)
