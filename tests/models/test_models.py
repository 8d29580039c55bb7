from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from distil.models import resolve_model
from distil.models.packaged import packaged_gguf


def test_packaged_model_converts_to_a_loadable_hf_directory(smollm2_dir):
    assert (smollm2_dir / "model.safetensors").is_file()
    cfg = AutoConfig.from_pretrained(smollm2_dir)
    assert cfg.vocab_size == 49152 and cfg.tie_word_embeddings
    assert not hasattr(cfg, "quantization_config")
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    # same weights as the GGUF it came from
    gguf = packaged_gguf()
    ref = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    ids = torch.tensor([[1, 504, 3458, 282, 260, 2000]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, ref(ids).logits)


def test_packaged_model_writes_code(smollm2_dir):
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    msgs = [{"role": "user", "content": "Write a Python function add(a, b) that returns the sum."}]
    enc = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**enc, max_new_tokens=30, do_sample=False)
    text = tok.decode(out[0, enc["input_ids"].shape[1] :])
    assert "def add(a, b)" in text


def test_tiny_model_shares_the_tokenizer(tiny_model_dir, smollm2_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config.vocab_size == 49152 and model.config.num_hidden_layers == 2
    assert (
        AutoTokenizer.from_pretrained(tiny_model_dir).get_vocab()
        == AutoTokenizer.from_pretrained(smollm2_dir).get_vocab()
    )
    logits = model(torch.tensor([[1, 2, 3]])).logits
    assert logits.shape == (1, 3, 49152) and torch.isfinite(logits).all()


def test_resolver_errors_say_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        resolve_model(tmp_path)
    with pytest.raises(FileNotFoundError, match="neither a local directory"):
        resolve_model("no-such-model")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="could not fetch hub model 'org/missing-model'"):
        resolve_model("org/missing-model")
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model(tmp_path) == tmp_path.resolve()
