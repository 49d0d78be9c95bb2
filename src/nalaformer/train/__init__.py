"""Training loops (vision, language), checkpointing and distributed helpers."""
