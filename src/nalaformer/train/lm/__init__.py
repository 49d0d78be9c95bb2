"""Causal language models on the shared core: config, corpus/model set-up, trainer, eval, reports."""
