"""What every training domain shares: configs as flags, precision, seeding, atomic checkpoints,
metrics and progress, distributed set-up. Imports nothing from ``train.vision`` or ``train.lm``."""
