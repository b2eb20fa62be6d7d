"""One timing run, two calibration rules: the latency model of three timm models built once
(readings kept), 30 fresh configurations timed paired once, then the calibration fitted with
the rule before e088f68 (leave-one-out, unbounded, the fastest judged too) and with the
shipped rule, both scored on the same fresh readings.

python reports/benchmarks/calibration-rule-check/run.py resnet18,mobilenetv3_small_100,deit_tiny_patch16_224
(writes results.json in the current directory)"""
import math, statistics, time, json, sys
from dataclasses import replace
import optuna, timm, torch
import autoprune.runtime.latency_model as L
from autoprune.console import quiet_optuna
from autoprune.study.latency import calibration_sparsities, paired_at, study_latency_model
from autoprune.study.prepared import PreparedModel
from autoprune.study.space import resolve_search_space
from autoprune.targets import get_target

def old_calibrate(model, measured):
    points = [({}, 1.0)] + list(measured)
    features = [model.relative_features(s) for s, _ in points]
    targets = [y for _, y in points]
    weights = [max(3.0, len(points) / 3)] + [1.0] * (len(points) - 1)
    fit = lambda used: L._fit_nonnegative_slopes([features[i] for i in used], [targets[i] for i in used], [weights[i] for i in used])
    outliers = set()
    while len(points) - len(outliers) > 4:
        kept = [j for j in range(len(points)) if j not in outliers]
        errors = {}
        for i in kept[1:]:
            c = fit([j for j in kept if j != i])
            errors[i] = abs(math.log(max(1e-6, L._predict(c, features[i])) / targets[i]))
        worst = max(errors, key=errors.get)
        if errors[worst] <= max(0.05, 3 * statistics.median(errors.values())): break
        outliers.add(worst)
    model.coefficients = fit([i for i in range(len(points)) if i not in outliers])
    return len(outliers)

target = get_target("cpu", "cpu", threads=2)
out = {}
for name in sys.argv[1].split(","):
    with quiet_optuna():
        torch.manual_seed(0)
        extra = {"img_size": 32} if "deit" in name else {}
        model = timm.create_model(name, pretrained=False, num_classes=10, **extra).eval()
        inputs = torch.randn(32, 3, 32, 32)
        prepared = PreparedModel.build(model, inputs, resolve_search_space(model, None), device=target.device)
        lm = study_latency_model(optuna.create_study(), prepared, target, 8, 7, 0.02, seed=0, max_rounds=21)
        readings = [(p["sparsity"], p["measured"]) for p in lm.calibration]
        refs = len(prepared.space.uniform_ratios)
        fresh = calibration_sparsities(prepared, 30 + refs, seed=1000)[refs:]
        measured = [1.0 / paired_at(prepared, target, s, 21, 0.02).speedup for s in fresh]
    res = {}
    for rule in ("before", "shipped"):
        m = replace(lm)
        if rule == "before": dropped = old_calibrate(m, readings)
        else: L.calibrate(m, readings); dropped = sum(p["outlier"] for p in m.calibration)
        errs = [abs(m.relative(s) - y) / y for s, y in zip(fresh, measured)]
        res[rule] = dict(dropped=dropped, within10=sum(e <= .1 for e in errs) / len(errs), median=statistics.median(errs), max=max(errs))
        print(f"{name} {rule:8s} set aside {dropped}/8  within10 {res[rule]['within10']:.0%}  median {res[rule]['median']:.1%}  max {res[rule]['max']:.0%}", flush=True)
    out[name] = dict(res, speedups=[round(1/y, 2) for y in measured], readings=[round(1/y, 2) for _, y in readings])
json.dump(out, open("results.json", "w"), indent=1)
