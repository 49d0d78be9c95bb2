"""Model families: ``vision`` (timm NaLaFormer backbones). Submodules are imported on demand."""
