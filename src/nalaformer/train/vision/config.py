"""``VisionTrainConfig``: every ``nalaformer train`` setting, one CLI flag or YAML key each."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core.config import option as _opt

__all__ = ["VisionTrainConfig", "SMALL_NALAFORMER"]

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

# A ~1M-parameter NaLaFormer for 32x32 inputs: the built-in default of `make run`.
SMALL_NALAFORMER = dict(embed_dims=[32, 64, 128, 256], depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8],
                        mlp_ratios=[2, 2, 2, 2], head_hidden_size=256)


@dataclass
class VisionTrainConfig:
    # model
    model: str = _opt("nalaformer_xt", "timm model name")
    model_kwargs: dict = field(default_factory=lambda: dict(SMALL_NALAFORMER),
                               metadata={"help": "extra create_model keywords (JSON)"})
    pretrained_file: str | None = _opt(None, "initial weights (a released checkpoint or ours)")
    drop_path: float | None = _opt(None, "stochastic depth rate (model default if unset)")
    # data
    dataset: str = _opt("fashion-mnist", "a registered dataset (nalaformer.data.registry): 'fashion-mnist' or 'folder' "
                                         "(ImageFolder train/ and val/)")
    data_dir: str | None = _opt(None, "dataset location (Fashion-MNIST: Debian's files by default)")
    download: bool = _opt(False, "download Fashion-MNIST with torchvision if not found")
    img_size: int = _opt(32, "input resolution", min=1)
    workers: int = _opt(0, "data-loader worker processes", min=0)
    # schedule and optimisation
    epochs: int = _opt(2, "training epochs", min=1)
    batch_size: int = _opt(128, "batch size per process", min=1)
    eval_batch_size: int | None = _opt(None, "eval batch size per process", min=1)
    accum_steps: int = _opt(1, "gradient accumulation steps", min=1)
    lr: float | None = _opt(None, "peak learning rate (default: lr_base * global_batch / lr_base_size)")
    lr_base: float = _opt(2e-3, "learning rate at lr_base_size")
    lr_base_size: int = _opt(128, "global batch size lr_base refers to", min=1)
    opt: str = _opt("adamw", "timm optimizer name")
    weight_decay: float = _opt(0.05, "weight decay", min=0)
    layer_decay: float | None = _opt(None, "layer-wise lr decay (uses the model's group_matcher)")
    sched: str = _opt("cosine", "timm scheduler name")
    warmup_epochs: float = _opt(0.3, "warm-up epochs", min=0)
    warmup_lr: float = _opt(1e-6, "warm-up start lr")
    min_lr: float = _opt(1e-5, "final lr")
    clip_grad: float | None = _opt(None, "gradient norm clipping")
    # regularisation / augmentation
    smoothing: float = _opt(0.0, "label smoothing", min=0)
    mixup: float = _opt(0.0, "mixup alpha", min=0)
    cutmix: float = _opt(0.0, "cutmix alpha", min=0)
    shift: int = _opt(0, "random translation in pixels (Fashion-MNIST)", min=0)
    hflip: bool = _opt(False, "random horizontal flips (Fashion-MNIST)")
    aa: str | None = _opt(None, "timm auto-augment policy, e.g. rand-m9-mstd0.5-inc1 (ImageFolder)")
    reprob: float = _opt(0.0, "random erasing probability (ImageFolder)", min=0)
    repeated_aug: int = _opt(1, "repeated augmentation repeats (>1 enables timm's RepeatAugSampler)", min=1)
    model_ema: bool = _opt(False, "keep an EMA of the weights (ModelEmaV3)")
    model_ema_decay: float = _opt(0.9998, "EMA decay")
    # performance
    amp: str = _opt("auto", "'auto' (bf16 on GPU, off on CPU), 'bf16', 'fp16' or 'none'")
    channels_last: bool = _opt(True, "channels_last memory format")
    compile: bool = _opt(False, "torch.compile the model")
    compile_mode: str = _opt("default", "torch.compile mode with --compile: 'default', 'reduce-overhead' (CUDA "
                             "graphs: the host-bound NaLaFormer step needs them), 'max-autotune' or "
                             "'max-autotune-no-cudagraphs'", choices=COMPILE_MODES)
    grad_checkpointing: bool = _opt(False, "activation checkpointing (less memory)")
    device: str = _opt("auto", "'auto', 'cpu' or 'cuda'")
    distributed: str = _opt("ddp", "'ddp' or 'fsdp' under torchrun")
    # bookkeeping
    output_dir: str = _opt("runs/fashion-mnist", "where checkpoints, logs and plots go")
    resume: str | None = _opt(None, "'auto' (latest in output_dir) or a checkpoint directory")
    overwrite: bool = _opt(False, "start over in an output_dir that holds an earlier run (removes that run's files)")
    keep_last: int = _opt(2, "checkpoints to keep (plus best.safetensors)", min=0)
    seed: int = _opt(0, "random seed")
    log_every: int = _opt(50, "progress-bar refresh every N steps (the bar shows on a terminal only)", min=1)
    tensorboard: bool = _opt(True, "also log to TensorBoard (when installed)")
    max_train_batches: int | None = _opt(None, "cap batches per epoch (smoke tests)", min=1)
    max_eval_batches: int | None = _opt(None, "cap eval batches (smoke tests)", min=1)
