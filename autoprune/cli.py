"""Command line: `autoprune search` exposes the options of `autoprune.search()`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import AutopruneError


def _constraint(text: str) -> tuple[str, float]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE such as latency_ms=4, got {text!r}")
    try:
        return key.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"constraint {key!r} needs a number, got {value!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autoprune", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("search", help="search pruned versions of a model",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    run.add_argument("--model", default="resnet18",
                     help="a timm model name, or a .safetensors checkpoint with a sidecar .json")
    run.add_argument("--weights", help="weights for --model NAME (.safetensors, or .pt/.pth "
                                      "state dict loaded with weights_only=True)")
    run.add_argument("--pretrained", action="store_true",
                     help="use timm's pretrained weights (must already be in your local cache)")
    run.add_argument("--data", default="digits", choices=["digits"],
                     help="data set: scikit-learn's bundled digits, upsampled to 32x32")
    run.add_argument("--batch-size", type=int, default=32, help="batch size (latency is timed at it)")
    run.add_argument("--train-epochs", type=int, default=4,
                     help="epochs to train a digits model when --model is a bare name")
    run.add_argument("--budget", default=None, help="wall clock: '90s', '20m', '8h' (default 4m "
                                                    "unless --trials is given)")
    run.add_argument("--trials", type=int, help="number of trials in total")
    run.add_argument("--constraint", type=_constraint, action="append", default=[],
                     metavar="KEY=VALUE", help="latency_ms, memory_mb, params, macs or "
                                               "max_accuracy_drop; repeatable")
    run.add_argument("--device", default="cpu")
    run.add_argument("--threads", type=int, help="CPU threads for timing (default: torch's)")
    run.add_argument("--search-space", help="a search_spaces/*.yaml file or family name")
    run.add_argument("--ignore-layer", action="append", default=[], metavar="REGEX",
                     help="module names never pruned; repeatable")
    run.add_argument("--finetune-steps", type=int, help="fine-tuning steps per trial")
    run.add_argument("--storage", help="Optuna storage URL (default: sqlite file in the run dir)")
    run.add_argument("--study-name", help="study name (default: model name and time)")
    run.add_argument("--output-dir", default="reports", help="where runs are written")
    run.add_argument("--seed", type=int, default=0)
    return parser


def _load_model(args):
    from .models import create_timm_model, digits_model, load_timm_checkpoint, load_weights

    if args.model.endswith(".safetensors") or Path(args.model).is_file():
        return load_timm_checkpoint(args.model)
    if args.weights:
        return load_weights(create_timm_model(args.model, 10), args.weights)
    if args.pretrained:
        return create_timm_model(args.model, 10, pretrained=True)
    return digits_model(args.model, Path(args.output_dir) / "models", epochs=args.train_epochs)


def search_command(args) -> int:
    from .data import digits_loaders
    from .study import search

    train, val = digits_loaders(batch_size=args.batch_size, seed=args.seed)
    model = _load_model(args)
    budget = args.budget if args.budget or args.trials else "4m"
    search(model, budget, trials=args.trials, train=train, val=val,
           constraints=dict(args.constraint), device=args.device, threads=args.threads,
           search_space=args.search_space, ignored_layers=args.ignore_layer,
           finetune_steps=args.finetune_steps, storage=args.storage, study_name=args.study_name,
           output_dir=args.output_dir, seed=args.seed)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {"search": search_command}[args.command](args)
    except AutopruneError as err:
        print(f"autoprune: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("autoprune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
