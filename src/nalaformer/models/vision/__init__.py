"""Vision model families (timm). Importing ``nalaformer.models.vision.nalaformer`` registers them."""
