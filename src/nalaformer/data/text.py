"""Text corpora for language-model training: files -> token stream -> packed fixed-length blocks.

The built-in corpus is the reStructuredText sources of the Python documentation shipped by Debian's
``python3.11-doc`` package (``/usr/share/doc/python3.11/html/_sources``, ~500 files, ~12 MB).
Documents are split into train / held-out by a hash of their path, so the split never depends on
file order or on the machine.
"""

from __future__ import annotations

import glob
import hashlib
import os
import pathlib
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["DEFAULT_CORPUS_DIRS", "default_corpus_files", "resolve_corpus", "split_held_out", "read_documents",
           "encode_documents", "PackedBlocks", "block_order", "CorpusError"]

DEFAULT_CORPUS_DIRS = ("/usr/share/doc/python3.11/html/_sources", "/usr/share/doc/python3/html/_sources")
TEXT_SUFFIXES = (".txt", ".rst", ".md", ".text")


class CorpusError(ValueError):
    """The corpus is missing, empty or unreadable."""


def default_corpus_files() -> list[pathlib.Path]:
    """The Python docs sources of ``python3.11-doc``, or a CorpusError saying how to get them."""
    for root in map(pathlib.Path, DEFAULT_CORPUS_DIRS):
        files = _text_files_under(root) if root.is_dir() else []
        if files:
            return files
    raise CorpusError(
        "--corpus: no corpus given and the built-in one (the Python documentation sources) is not installed. "
        "Install it with `sudo apt-get install python3.11-doc` (Debian/Ubuntu; files land in "
        f"{DEFAULT_CORPUS_DIRS[0]}), or pass --corpus with your own text files, directories or globs.")


def _text_files_under(root: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name.endswith(TEXT_SUFFIXES))


def resolve_corpus(patterns: list[str] | str | None) -> list[pathlib.Path]:
    """Files from paths, directories (text files under them) and globs; the default corpus when None.

    A string may hold several patterns joined by ``os.pathsep`` (``a.txt:docs/:notes/*.md``).
    """
    if patterns is None or patterns == [] or patterns == "":
        return default_corpus_files()
    if isinstance(patterns, str):
        patterns = [p for p in patterns.split(os.pathsep) if p]
    files: list[pathlib.Path] = []
    for pattern in patterns:
        path = pathlib.Path(pattern).expanduser()
        if path.is_dir():
            files += _text_files_under(path)
        elif path.is_file():
            files.append(path)
        else:
            matches = map(pathlib.Path, sorted(glob.glob(str(path), recursive=True)))
            files += [p for p in matches if p.is_file()]
    files = sorted(set(files))
    if not files:
        raise CorpusError(f"--corpus: no files match {patterns!r} (give text files, directories or globs)")
    return files


def _hash_unit(text: str, seed: int) -> float:
    digest = hashlib.sha1(f"{seed}:{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def split_held_out(files: list[pathlib.Path], fraction: float, seed: int = 0,
                   ) -> tuple[list[pathlib.Path], list[pathlib.Path]]:
    """(train, held_out), both sorted: a file is held out when the hash of its path relative to the
    corpus root falls below ``fraction`` (so the split does not depend on where the corpus lives).

    At least one file lands on each side when there are two or more files.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"--held-out: expected a fraction in [0, 1), got {fraction}")
    files = sorted(set(map(pathlib.Path, files)))
    root = pathlib.Path(os.path.commonpath([str(p.parent) for p in files])) if files else pathlib.Path()
    score = {p: _hash_unit(p.relative_to(root).as_posix(), seed) for p in files}
    held = [p for p in files if score[p] < fraction]
    if fraction > 0 and not held and len(files) > 1:
        held = [min(files, key=score.get)]
    if len(held) == len(files) and len(files) > 1:
        held.remove(max(held, key=score.get))
    return [p for p in files if p not in set(held)], held


def read_documents(files: list[pathlib.Path]) -> list[str]:
    """File contents (UTF-8, undecodable bytes replaced); empty files are dropped."""
    docs = []
    for path in files:
        try:
            text = pathlib.Path(path).read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise CorpusError(f"--corpus: cannot read {path}: {exc}") from exc
        if text.strip():
            docs.append(text)
    return docs


def encode_documents(texts: list[str], tokenizer) -> np.ndarray:
    """One token stream: every document followed by the tokenizer's EOS token.

    Uses the tokenizer's ``encode_documents`` fast path when it has one (the byte tokenizer).
    """
    if tokenizer.eos_token_id is None:
        raise ValueError("--tokenizer: the tokenizer has no EOS token to separate documents")
    if hasattr(tokenizer, "encode_documents"):
        stream = tokenizer.encode_documents(texts)
    else:
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        stream = np.fromiter((t for doc in ids for t in (*doc, tokenizer.eos_token_id)), dtype=np.int64)
    dtype = np.uint16 if len(tokenizer) <= np.iinfo(np.uint16).max + 1 else np.int32
    return stream.astype(dtype, copy=False)


@dataclass
class PackedBlocks:
    """Non-overlapping ``seq_len`` blocks of a token stream.

    With ``documents=True`` every document is its own sequence: positions restart after each EOS
    (and at the block start), and the label of a document's first token is -100, so no prediction
    crosses a document boundary. Otherwise blocks are plain GPT-style concatenations.
    """

    stream: np.ndarray
    seq_len: int
    eos_token_id: int
    documents: bool = True

    def __post_init__(self):
        if self.seq_len < 2:
            raise ValueError(f"--seq-len: expected >= 2, got {self.seq_len}")
        if len(self) == 0:
            raise CorpusError(f"--corpus: {len(self.stream)} tokens are fewer than one block of --seq-len "
                              f"{self.seq_len}; give more text or a shorter --seq-len")

    def __len__(self) -> int:
        return len(self.stream) // self.seq_len

    def batch(self, indices) -> dict[str, torch.Tensor]:
        """input_ids and labels (B, N) int64 (plus position_ids with documents) for block indices."""
        rows = np.stack([self.stream[i * self.seq_len:(i + 1) * self.seq_len] for i in indices]).astype(np.int64)
        input_ids = torch.from_numpy(rows)
        out = {"input_ids": input_ids, "labels": input_ids.clone()}
        if self.documents:
            starts = torch.zeros_like(input_ids, dtype=torch.bool)
            starts[:, 0] = True
            starts[:, 1:] = input_ids[:, :-1] == self.eos_token_id
            idx = torch.arange(self.seq_len).expand_as(input_ids)
            last_start = torch.where(starts, idx, torch.zeros_like(idx)).cummax(1).values
            out["position_ids"] = idx - last_start
            out["labels"][:, 1:][starts[:, 1:]] = -100
        return out


def block_order(num_blocks: int, start: int, count: int, seed: int) -> list[int]:
    """Blocks ``start .. start+count-1`` of an endless sequence of seeded per-epoch permutations."""
    out, epoch_cache = [], {}
    for pos in range(start, start + count):
        epoch, offset = divmod(pos, num_blocks)
        if epoch not in epoch_cache:
            epoch_cache[epoch] = np.random.default_rng([seed, epoch]).permutation(num_blocks)
        out.append(int(epoch_cache[epoch][offset]))
    return out

