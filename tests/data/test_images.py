"""ImageFolder reading: broken files and decompression bombs are skipped with a warning, not fatal."""

from __future__ import annotations

import pytest
from PIL import Image

from nalaformer.data.images import build_image_folder, collate_skipping


def test_decompression_bomb_is_skipped_like_a_broken_image(tmp_path, monkeypatch):
    folder = tmp_path / "train" / "a"
    folder.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(folder / "small.png")
    Image.new("RGB", (64, 64)).save(folder / "bomb.png")
    (folder / "broken.png").write_bytes(b"not a png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64x64 = 4096 > 2x the limit: PIL refuses to decode
    dataset = build_image_folder(tmp_path, "train", transform=None)
    with pytest.warns(RuntimeWarning, match="skipping unreadable image .*(bomb|broken).png") as caught:
        items = [dataset[i] for i in range(len(dataset))]
    assert len(caught) == 2 and sum(item is None for item in items) == 2
    x, y, skipped = collate_skipping([(0, 0) if item is not None else None for item in items])
    assert skipped == 2
