"""A saved NaLa checkpoint works with lm-evaluation-harness's ``hf`` model type (local task, no downloads)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from nalaformer.models.lm import NaLaByteTokenizer
from tests.models.lm.helpers import tiny_model

lm_eval = pytest.importorskip("lm_eval", reason="lm-evaluation-harness is not installed (pip install 'lm-eval[hf]')")
pytest.importorskip("accelerate", reason="lm-eval's hf model needs accelerate (pip install 'lm-eval[hf]')")

TASK_YAML = """\
task: nala_local_choice
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
"""

ROLLING_YAML = """\
task: nala_local_rolling
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{question}}}}"
metric_list:
  - metric: bits_per_byte
    aggregation: bits_per_byte
    higher_is_better: false
"""

DOCS = [
    {"question": "The capital of France is", "choices": [" Paris", " a teapot"], "answer": 0},
    {"question": "def main(", "choices": ["):", " banana"], "answer": 0},
    {"question": "import", "choices": [" os", "??"], "answer": 1},
]


def _choice_logprob(model, tokenizer, context: str, continuation: str) -> float:
    ctx, cont = tokenizer(context).input_ids, tokenizer(continuation).input_ids
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logprobs = model(ids).logits.log_softmax(-1)[0]
    return sum(logprobs[len(ctx) - 1 + i, t].item() for i, t in enumerate(cont))


def _document_logprob(model, tokenizer, text: str) -> float:
    """log p(text | <|endoftext|>): how the harness scores a rolling-loglikelihood document."""
    ids = torch.tensor([[tokenizer.eos_token_id] + tokenizer(text).input_ids])
    with torch.no_grad():
        logprobs = model(ids).logits.log_softmax(-1)[0]
    return logprobs[:-1].gather(1, ids[0, 1:, None]).sum().item()


def test_checkpoint_directory_runs_in_lm_eval(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from lm_eval.tasks import TaskManager

    from nalaformer.train.lm.evaluate import run_harness

    model, tokenizer = tiny_model(), NaLaByteTokenizer()
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    tasks_dir = tmp_path / "tasks"
    tasks_dir.mkdir()
    (tasks_dir / "nala_local_choice.yaml").write_text(TASK_YAML.format(data=data))
    (tasks_dir / "nala_local_rolling.yaml").write_text(ROLLING_YAML.format(data=data))
    assert "nala_local_choice" in TaskManager(include_path=str(tasks_dir)).all_tasks

    results = run_harness(str(model_dir), ["nala_local_choice", "nala_local_rolling"], include_path=str(tasks_dir))
    bits = results["results"]["nala_local_rolling"]["bits_per_byte,none"]
    total_bytes = sum(len(d["question"].encode()) for d in DOCS)
    expected_bits = -sum(_document_logprob(model, tokenizer, d["question"]) for d in DOCS) / total_bytes / math.log(2)
    assert math.isclose(bits, expected_bits, rel_tol=1e-4)
    acc = results["results"]["nala_local_choice"]["acc,none"]
    # the harness scores each choice by its summed log-likelihood after the question (plus a space)
    expected = sum(
        max(range(2), key=lambda c: _choice_logprob(model, tokenizer, d["question"], " " + d["choices"][c]))
        == d["answer"] for d in DOCS) / len(DOCS)
    assert math.isclose(acc, expected)
