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
    held_out: float = _opt(0.05, "fraction of documents held out for perplexity")
    seq_len: int = _opt(256, "tokens per training sequence")
    packing: str = _opt("documents", "'documents' (positions restart per document, no cross-document "
                                     "attention) or 'concat' (GPT-style)")
    # optimisation
    steps: int = _opt(200, "optimizer steps")
    batch_size: int = _opt(16, "sequences per process per micro-step")
    grad_accum: int = _opt(1, "micro-steps per optimizer step")
    lr: float = _opt(2e-3, "peak learning rate")
    min_lr_ratio: float = _opt(0.1, "final lr as a fraction of the peak (cosine)")
    warmup_steps: int = _opt(30, "linear warm-up steps")
    weight_decay: float = _opt(0.1, "AdamW weight decay (matrices and embeddings only)")
    beta2: float = _opt(0.95, "AdamW beta2")
    grad_clip: float = _opt(1.0, "gradient-norm clipping (0 = off)")
    # performance
    amp: str = _opt("auto", "'auto' (bf16 on GPU, off on CPU), 'bf16', 'fp16' or 'none'")
    gradient_checkpointing: bool = _opt(False, "recompute activations in the backward pass")
    device: str = _opt("auto", "'auto', 'cpu' or 'cuda'")
    distributed: str = _opt("ddp", "'ddp' or 'fsdp' under torchrun")
    # monitoring and checkpoints
    output_dir: str = _opt("runs/lm", "checkpoints, metrics.csv, loss.png, samples.txt")
    eval_every: int = _opt(50, "held-out perplexity every N steps (0 = only at the end)")
    eval_batches: int = _opt(10, "held-out batches per evaluation (0 = all)")
    sample_every: int = _opt(100, "print a sample generation every N steps (0 = off)")
    sample_prompt: str = _opt("The ", "prompt of the sample generations")
    sample_tokens: int = _opt(80, "tokens per sample generation")
    save_every: int = _opt(100, "checkpoint every N steps (and at the end)")
    keep_last: int = _opt(2, "checkpoints to keep")
    resume: Optional[str] = _opt(None, "'auto' (latest in output_dir, if any) or a checkpoint directory")
    stop_after: Optional[int] = _opt(None, "stop (with a checkpoint) after this many steps of this run")
    seed: int = _opt(0, "seed of init, data order and the held-out split")
    log_every: int = _opt(10, "progress-bar refresh every N steps (the bar shows on a terminal only)")
    tensorboard: bool = _opt(True, "also log to TensorBoard when installed")

