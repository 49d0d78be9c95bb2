"""A byte-level tokenizer: ids 0-255 are the UTF-8 bytes, then ``<|endoftext|>`` (256) and ``<|pad|>`` (257).

Needs no vocabulary file and no download; ``save_pretrained``/``AutoTokenizer.from_pretrained`` and
the text-generation pipeline work once :func:`nalaformer.models.lm.register` has run.
"""

from __future__ import annotations

import numpy as np
from transformers import AddedToken, PreTrainedTokenizer

__all__ = ["NaLaByteTokenizer"]

NUM_BYTES = 256


class NaLaByteTokenizer(PreTrainedTokenizer):
    """UTF-8 bytes as tokens. ``<|endoftext|>`` separates documents and serves as BOS and EOS."""

    vocab_files_names: dict = {}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, eos_token="<|endoftext|>", pad_token="<|pad|>", bos_token="<|endoftext|>", **kwargs):
        eos = AddedToken(eos_token, special=True) if isinstance(eos_token, str) else eos_token
        pad = AddedToken(pad_token, special=True) if isinstance(pad_token, str) else pad_token
        self._added_tokens_decoder = {NUM_BYTES: eos, NUM_BYTES + 1: pad}
        kwargs.pop("unk_token", None)
        super().__init__(eos_token=eos, pad_token=pad, bos_token=bos_token, **kwargs)

    @property
    def vocab_size(self) -> int:
        return NUM_BYTES

    def get_vocab(self) -> dict[str, int]:
        vocab = {chr(i): i for i in range(NUM_BYTES)}
        vocab.update(self.added_tokens_encoder)
        return vocab

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        return [chr(b) for b in text.encode("utf-8")]

    def _convert_token_to_id(self, token: str) -> int:
        return ord(token) if len(token) == 1 and ord(token) < NUM_BYTES else self.eos_token_id

    def _convert_id_to_token(self, index: int) -> str:
        return chr(index) if 0 <= index < NUM_BYTES else ""

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """Bytes are decoded together (invalid UTF-8 becomes U+FFFD); special tokens pass through."""
        pieces, buffer = [], bytearray()
        for token in tokens:
            if len(token) == 1 and ord(token) < NUM_BYTES:
                buffer.append(ord(token))
            else:
                pieces.append(buffer.decode("utf-8", errors="replace") + token)
                buffer = bytearray()
        return "".join(pieces) + buffer.decode("utf-8", errors="replace")

    def encode_documents(self, texts) -> np.ndarray:
        """Fast path for corpora: every text's bytes followed by ``<|endoftext|>``, as one uint16 array."""
        parts = []
        for text in texts:
            parts.append(np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint16))
            parts.append(np.array([self.eos_token_id], dtype=np.uint16))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, ...]:
        return ()  # the vocabulary is fixed: nothing to write
