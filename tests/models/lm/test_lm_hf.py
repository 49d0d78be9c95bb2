"""transformers integration: Auto classes, safetensors round trip, byte tokenizer, text-generation pipeline."""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer, pipeline

from nalaformer.models.lm import NaLaByteTokenizer, NaLaConfig, NaLaForCausalLM, NaLaModel, register
from tests.models.lm.helpers import random_ids, tiny_model


def test_register_is_idempotent_and_fills_the_auto_classes():
    register()
    register()
    config = AutoConfig.for_model("nala", hidden_size=64, intermediate_size=96, num_hidden_layers=1,
                                  num_attention_heads=2, vocab_size=300)
    assert isinstance(config, NaLaConfig)
    assert type(AutoModel.from_config(config)) is NaLaModel
    assert type(AutoModelForCausalLM.from_config(config)) is NaLaForCausalLM


def test_save_and_load_round_trip_in_safetensors(tmp_path):
    model = tiny_model("hybrid-conv")
    tokenizer = NaLaByteTokenizer()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and not list(tmp_path.glob("*.bin"))
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is NaLaForCausalLM and loaded.config.softmax_layers == [1]
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()  # still tied
    ids = random_ids(2, 12)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)
    reloaded_tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert type(reloaded_tokenizer) is NaLaByteTokenizer
    assert reloaded_tokenizer("déjà vu").input_ids == tokenizer("déjà vu").input_ids


def test_byte_tokenizer_round_trips_text_and_specials():
    tok = NaLaByteTokenizer()
    text = "naïve ∑ code\n\tdone"
    ids = tok(text).input_ids
    assert ids == list(text.encode("utf-8")) and len(tok) == 258
    assert tok.decode(ids) == text
    with_eos = tok(text + "<|endoftext|>").input_ids
    assert with_eos[-1] == tok.eos_token_id == 256 and tok.pad_token_id == 257
    assert tok.decode(with_eos, skip_special_tokens=True) == text
    assert tok.decode([0xE2, 0x88]) == "\ufffd"  # a cut multi-byte character decodes, it does not raise
    tok.padding_side = "left"
    batch = tok(["ab", "abcd"], padding=True, return_tensors="pt")
    assert batch.input_ids[0].tolist() == [257, 257, 97, 98] and batch.attention_mask[0].tolist() == [0, 0, 1, 1]
    assert tok.encode_documents(["ab", "c"]).tolist() == [97, 98, 256, 99, 256]


def test_text_generation_pipeline(tmp_path):
    model = tiny_model()
    tokenizer = NaLaByteTokenizer()
    generator = pipeline("text-generation", model=model, tokenizer=tokenizer, device="cpu")
    out = generator("def main(", max_new_tokens=8, do_sample=False)
    assert out[0]["generated_text"].startswith("def main(")
    ids = tokenizer("def main(", return_tensors="pt").input_ids
    expected = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=257)
    assert out[0]["generated_text"] == tokenizer.decode(expected[0], skip_special_tokens=True)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    from_dir = pipeline("text-generation", model=str(tmp_path), device="cpu")
    assert from_dir("def main(", max_new_tokens=8, do_sample=False) == out
