"""Image classification on the shared core: config, data, trainer, eval and predict."""
