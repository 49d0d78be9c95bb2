"""Pieces shared by ``train-lm`` and ``eval-lm``: tokenizer, model and corpus splits."""

from __future__ import annotations

import inspect
import json
import pathlib

import numpy as np

from ...data.text import encode_documents, read_documents, resolve_corpus, split_held_out

__all__ = ["load_tokenizer", "build_model", "load_corpus_streams"]


def load_tokenizer(spec: str):
    """``"byte"`` (the built-in byte-level tokenizer) or a local Hugging Face tokenizer directory."""
    from ...models.lm import NaLaByteTokenizer

    if spec == "byte":
        return NaLaByteTokenizer()
    path = pathlib.Path(spec).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"--tokenizer: {spec!r} is not 'byte' nor an existing tokenizer directory")
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ValueError(f"--tokenizer: cannot load a tokenizer from {path}: {exc}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def build_model(spec: str, tokenizer, overrides: dict | None = None):
    """A fresh NaLaForCausalLM from a preset name or a config.json (file or model directory).

    The vocabulary grows to the tokenizer's size; special-token ids come from the tokenizer.
    """
    from ...models.lm import PRESETS, NaLaConfig, NaLaForCausalLM

    overrides = dict(overrides or {})
    if spec in PRESETS:
        base = dict(PRESETS[spec])
    else:
        path = pathlib.Path(spec).expanduser()
        path = path / "config.json" if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"--model: {spec!r} is neither a preset ({', '.join(sorted(PRESETS))}) nor a "
                                    "config.json / model directory")
        base = {k: v for k, v in json.loads(path.read_text()).items() if k not in ("model_type", "architectures",
                                                                                  "transformers_version")}
    known = set(inspect.signature(NaLaConfig.__init__).parameters) - {"self", "kwargs"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"--model-overrides: unknown NaLaConfig key(s) {', '.join(unknown)}; "
                         f"valid keys: {', '.join(sorted(known))}")
    base.update(overrides)
    base["vocab_size"] = max(int(base.get("vocab_size", 0)), len(tokenizer))
    base.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)
    return NaLaForCausalLM(NaLaConfig(**base))


def load_corpus_streams(corpus, tokenizer, held_out: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) token streams of the corpus (default: the Python docs), split by document."""
    files = resolve_corpus(corpus)
    train_files, held_files = split_held_out(files, held_out, seed)
    train_docs, held_docs = read_documents(train_files), read_documents(held_files)
    if not train_docs:
        from ...data.text import CorpusError

        raise CorpusError(f"--corpus: the {len(train_files)} training file(s) hold no text")
    if held_out > 0 and not held_docs:  # a single document: hold out its tail instead
        stream = encode_documents(train_docs, tokenizer)
        cut = int(len(stream) * (1 - held_out))
        return stream[:cut], stream[cut:]
    return encode_documents(train_docs, tokenizer), encode_documents(held_docs, tokenizer)
