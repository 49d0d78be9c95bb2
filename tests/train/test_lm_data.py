"""Text corpora: file resolution, held-out split, packing into document-aware blocks, data order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nalaformer.data import text as text_data
from nalaformer.data.text import (CorpusError, PackedBlocks, block_order, encode_documents, resolve_corpus,
                                  split_held_out)


def test_resolve_corpus_accepts_files_dirs_and_globs(tmp_path):
    (tmp_path / "a.txt").write_text("alpha")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.rst").write_text("beta")
    (tmp_path / "c.bin").write_bytes(b"\0")
    assert resolve_corpus(str(tmp_path)) == [tmp_path / "a.txt", tmp_path / "sub" / "b.rst"]
    assert resolve_corpus([str(tmp_path / "**" / "*.rst")]) == [tmp_path / "sub" / "b.rst"]
    assert resolve_corpus([str(tmp_path / "c.bin")]) == [tmp_path / "c.bin"]
    assert resolve_corpus(f"{tmp_path / 'a.txt'}:{tmp_path / 'c.bin'}") == [tmp_path / "a.txt", tmp_path / "c.bin"]
    with pytest.raises(CorpusError, match="--corpus"):
        resolve_corpus([str(tmp_path / "nothing-*.txt")])


def test_missing_default_corpus_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setattr(text_data, "DEFAULT_CORPUS_DIRS", (str(tmp_path / "absent"),))
    with pytest.raises(CorpusError, match="apt-get install python3.11-doc"):
        resolve_corpus(None)


def test_held_out_split_is_deterministic_and_disjoint(tmp_path):
    files = [tmp_path / f"doc{i}.txt" for i in range(40)]
    train, held = split_held_out(files, 0.2, seed=3)
    assert (train, held) == split_held_out(list(reversed(files)), 0.2, seed=3)
    moved = [tmp_path / "elsewhere" / p.name for p in files]
    assert [p.name for p in split_held_out(moved, 0.2, seed=3)[1]] == [p.name for p in held]
    assert set(train).isdisjoint(held) and set(train) | set(held) == set(files)
    assert 2 <= len(held) <= 16
    assert split_held_out(files[:2], 0.01)[1] != []  # tiny corpora still get a held-out file
    with pytest.raises(ValueError, match="--held-out"):
        split_held_out(files, 1.5)


def test_documents_become_independent_sequences():
    eos = 9
    stream = np.array([1, 2, eos, 3, 4, 5, eos, 6, 7, eos, 8, 1], dtype=np.uint16)
    blocks = PackedBlocks(stream, seq_len=6, eos_token_id=eos, documents=True)
    batch = blocks.batch([0, 1])
    assert batch["input_ids"].tolist() == [[1, 2, 9, 3, 4, 5], [9, 6, 7, 9, 8, 1]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 2], [0, 0, 1, 2, 0, 1]]
    assert batch["labels"].tolist() == [[1, 2, 9, -100, 4, 5], [9, -100, 7, 9, -100, 1]]
    plain = PackedBlocks(stream, seq_len=6, eos_token_id=eos, documents=False).batch([1])
    assert "position_ids" not in plain and plain["labels"].tolist() == [[9, 6, 7, 9, 8, 1]]


def test_block_order_is_a_pure_function_of_position():
    order = block_order(5, 0, 15, seed=1)
    for epoch in range(3):
        assert sorted(order[5 * epoch:5 * epoch + 5]) == list(range(5))
    assert block_order(5, 7, 4, seed=1) == order[7:11]
    assert order[:5] != order[5:10] or order[5:10] != order[10:15]


def test_empty_or_short_corpus_is_a_clear_error():
    with pytest.raises(CorpusError, match="--seq-len"):
        PackedBlocks(np.zeros(5, dtype=np.uint16), seq_len=8, eos_token_id=0)


def test_encode_documents_with_a_generic_tokenizer():
    class WordTokenizer:  # the interface of a Hugging Face tokenizer that encode_documents relies on
        eos_token_id = 0

        def __len__(self):
            return 10

        def __call__(self, texts, add_special_tokens=False):
            return {"input_ids": [[len(w) for w in t.split()] for t in texts]}

    stream = encode_documents(["a bb", "ccc"], WordTokenizer())
    assert stream.tolist() == [1, 2, 0, 3, 0] and stream.dtype == np.uint16
    assert torch.from_numpy(stream.astype(np.int64)).sum() == 6
