"""Text for language models: the documentation strings of Python's standard library (needs
no download), tokenized by a tokenizer built here, or a user's text files tokenized by their
model's own tokenizer (`autoprune search --model DIR --data FILE.txt`).

The text is what this Python ships (it differs slightly between Python versions, and is the
same on every run of one). `byte` tokens are the UTF-8 bytes (a vocabulary of 256, nothing to
train); `bpe` trains a byte-level BPE with HuggingFace's `tokenizers` (installed with
transformers) on the text itself. The token stream is cut into blocks of `length` tokens and
split into train and validation blocks by a fixed interleaving, so both see every module.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Iterable

import torch
from torch.utils.data import DataLoader, TensorDataset

from ..errors import InvalidInputError

# Standard-library modules whose documentation makes the corpus: prose-heavy, always present.
MODULES = ("argparse", "collections", "csv", "datetime", "decimal", "email", "functools",
           "http.client", "inspect", "itertools", "json", "logging", "pathlib", "pickle",
           "random", "re", "shutil", "socket", "statistics", "string", "subprocess",
           "tarfile", "textwrap", "threading", "typing", "unittest", "urllib.parse", "uuid",
           "zipfile")


def standard_library_text(modules: Iterable[str] = MODULES) -> str:
    """The docstrings of `modules` and of their public classes, functions and methods."""
    pieces = []
    for name in modules:
        module = importlib.import_module(name)
        pieces.append(inspect.getdoc(module) or "")
        for attribute, value in sorted(vars(module).items()):
            if attribute.startswith("_") or getattr(value, "__module__", None) != module.__name__:
                continue
            pieces.append(inspect.getdoc(value) or "")
            if inspect.isclass(value):
                pieces += [inspect.getdoc(method) or "" for key, method in sorted(vars(value).items())
                           if not key.startswith("_") and callable(method)]
    return "\n\n".join(piece for piece in pieces if piece)


def byte_level_bpe(text: str, vocab_size: int = 512):
    """A byte-level BPE tokenizer (HuggingFace `tokenizers`) trained on `text`."""
    try:
        from tokenizers import ByteLevelBPETokenizer
    except ImportError:
        raise ImportError("a BPE tokenizer needs the tokenizers package: pip install "
                          "'autoprune[hf]'") from None
    tokenizer = ByteLevelBPETokenizer()
    tokenizer.train_from_iterator([text], vocab_size=vocab_size, min_frequency=2,
                                  show_progress=False)
    return tokenizer


def text_loaders(length: int = 64, batch_size: int = 16, tokens: str = "byte",
                 vocab_size: int = 512, val_every: int = 10,
                 max_tokens: int | None = None) -> tuple[DataLoader, DataLoader, int]:
    """(train, val, vocabulary size): loaders of `(input_ids, labels)` blocks of `length`
    tokens (labels = input_ids: the causal LM shifts them), every `val_every`-th block held
    out. `tokens`: "byte" or "bpe" (`vocab_size` tokens). `max_tokens` cuts the stream."""
    text = standard_library_text()
    if tokens == "byte":
        ids, vocabulary = list(text.encode("utf-8")), 256
    elif tokens == "bpe":
        tokenizer = byte_level_bpe(text, vocab_size)
        ids, vocabulary = tokenizer.encode(text).ids, tokenizer.get_vocab_size()
    else:
        raise ValueError(f"tokens must be 'byte' or 'bpe', got {tokens!r}")
    return token_loaders(ids[:max_tokens] if max_tokens else ids, length, batch_size,
                         val_every) + (vocabulary,)


def token_loaders(ids: list[int], length: int, batch_size: int, val_every: int = 10
                  ) -> tuple[DataLoader, DataLoader]:
    """(train, val) loaders of `(input_ids, labels)` blocks of `length` tokens cut from the
    token stream `ids`, every `val_every`-th block held out."""
    stream = torch.tensor(ids, dtype=torch.long)
    blocks = stream[: len(stream) // length * length].view(-1, length)
    held_out = torch.arange(len(blocks)) % val_every == val_every - 1
    if held_out.sum() == 0 or (~held_out).sum() == 0:
        raise ValueError(f"{len(blocks)} blocks of {length} tokens are too few to split")
    generator = torch.Generator().manual_seed(0)
    train = DataLoader(TensorDataset(blocks[~held_out], blocks[~held_out]),
                       batch_size=batch_size, shuffle=True, generator=generator)
    val = DataLoader(TensorDataset(blocks[held_out], blocks[held_out]), batch_size=batch_size)
    return train, val


BUNDLED_TEXT = "text"  # `--data text`: the standard library's docstrings


def read_text(source: str | Path) -> str:
    """`BUNDLED_TEXT`, a UTF-8 text file, or every `*.txt` under a directory (sorted)."""
    if str(source) == BUNDLED_TEXT:
        return standard_library_text()
    path = Path(source)
    files = sorted(path.rglob("*.txt")) if path.is_dir() else [path]
    if not path.exists() or not files:
        raise InvalidInputError(f"--data {source}: give 'text' (the standard library's "
                                "docstrings), a UTF-8 .txt file, or a directory of .txt files")
    try:
        return "\n\n".join(file.read_text(encoding="utf-8") for file in files)
    except UnicodeDecodeError as err:
        raise InvalidInputError(f"--data {source}: not UTF-8 text ({err})") from None


def model_tokenizer(directory: str | Path):
    """The tokenizer saved beside a HuggingFace model (`tokenizer.save_pretrained(DIR)`)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(directory))
    except Exception as err:  # no tokenizer files, or unreadable ones
        raise InvalidInputError(f"{directory} holds no tokenizer autoprune can load ({err}); "
                                "save the model's with tokenizer.save_pretrained(DIR)") from None


def causal_lm_loaders(text: str, tokenizer, vocabulary: int, length: int = 64,
                      batch_size: int = 16) -> tuple[DataLoader, DataLoader]:
    """(train, val) blocks of `text` in `tokenizer`'s tokens, checked against the model's
    `vocabulary` before any work."""
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    if ids and max(ids) >= vocabulary:
        raise InvalidInputError(f"the tokenizer gives token {max(ids)}, beyond the model's "
                                f"vocabulary of {vocabulary}: they do not belong together")
    try:
        return token_loaders(ids, length, batch_size)
    except ValueError as err:
        raise InvalidInputError(f"the text makes {len(ids)} tokens: {err}") from None
