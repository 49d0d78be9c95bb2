"""``LMTrainConfig``: every ``train-lm`` setting, one CLI flag or YAML key each."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from ..core.config import option as _opt

__all__ = ["LMTrainConfig"]


@dataclass
class LMTrainConfig:
    # model and tokenizer
    model: str = _opt("nala-small", "preset (nala-tiny, nala-small, nala-340m, nala-hybrid-340m) or config.json")
    model_overrides: Optional[dict] = _opt(None, "NaLaConfig keywords over the preset (JSON), e.g. "
                                                 "'{\"softmax_layers\": [3]}'")
    tokenizer: str = _opt("byte", "'byte' or a local Hugging Face tokenizer directory")
    # data
    corpus: Union[str, list, None] = _opt(None, "text files, directories or globs, several joined by "
                                                "os.pathsep (':'), or a YAML list (default: the Python docs)")
    held_out: float = _opt(0.05, "fraction of documents held out for perplexity", min=0)
    seq_len: int = _opt(256, "tokens per training sequence", min=2)
    packing: str = _opt("documents", "'documents' (positions restart per document, no cross-document "
                                     "attention) or 'concat' (GPT-style)")
    # optimisation
    steps: int = _opt(200, "optimizer steps", min=1)
    batch_size: int = _opt(16, "sequences per process per micro-step", min=1)
    grad_accum: int = _opt(1, "micro-steps per optimizer step", min=1)
    lr: float = _opt(2e-3, "peak learning rate")
    min_lr_ratio: float = _opt(0.1, "final lr as a fraction of the peak (cosine)", min=0)
    warmup_steps: int = _opt(30, "linear warm-up steps", min=0)
    weight_decay: float = _opt(0.1, "AdamW weight decay (matrices and embeddings only)", min=0)
    beta2: float = _opt(0.95, "AdamW beta2")
    grad_clip: float = _opt(1.0, "gradient-norm clipping (0 = off)", min=0)
    # performance
    amp: str = _opt("auto", "'auto' (bf16 on GPU, off on CPU), 'bf16', 'fp16' or 'none'")
    gradient_checkpointing: bool = _opt(False, "recompute activations in the backward pass")
    device: str = _opt("auto", "'auto', 'cpu' or 'cuda'")
    distributed: str = _opt("ddp", "'ddp' or 'fsdp' under torchrun")
    # monitoring and checkpoints
    output_dir: str = _opt("runs/lm", "checkpoints, metrics.csv, loss.png, samples.txt")
    eval_every: int = _opt(50, "held-out perplexity every N steps (0 = only at the end)", min=0)
    eval_batches: int = _opt(10, "held-out batches per evaluation (0 = all)", min=0)
    sample_every: int = _opt(100, "print a sample generation every N steps (0 = off)", min=0)
    sample_prompt: str = _opt("The ", "prompt of the sample generations")
    sample_tokens: int = _opt(80, "tokens per sample generation", min=1)
    save_every: int = _opt(100, "checkpoint every N steps (and at the end)", min=0)
    keep_last: int = _opt(2, "checkpoints to keep", min=0)
    resume: Optional[str] = _opt(None, "'auto' (latest in output_dir, if any) or a checkpoint directory")
    overwrite: bool = _opt(False, "start over in an output_dir that holds an earlier run (removes that run's files)")
    stop_after: Optional[int] = _opt(None, "stop (with a checkpoint) after this many steps of this run", min=1)
    seed: int = _opt(0, "seed of init, data order and the held-out split")
    log_every: int = _opt(10, "progress-bar refresh every N steps (the bar shows on a terminal only)", min=1)
    tensorboard: bool = _opt(True, "also log to TensorBoard when installed")

