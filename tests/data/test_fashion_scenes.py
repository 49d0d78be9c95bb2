import pytest
import torch

from nalaformer.data.fashion_scenes import BACKGROUND, FashionScenes, SceneSpec, compose_scene


def _pool():
    """Two solid items (class 3 and class 7) and one hollow frame (class 0)."""
    items = torch.zeros(3, 1, 28, 28, dtype=torch.uint8)
    items[0, 0, 4:24, 4:24] = 255
    items[1] = 200
    items[2, 0, :2], items[2, 0, -2:], items[2, 0, :, :2], items[2, 0, :, -2:] = 255, 255, 255, 255
    return items, torch.tensor([3, 7, 0])


def test_labels_follow_the_top_item_and_background():
    items, classes = _pool()
    spec = SceneSpec(size=64, items=(4, 6), item_size=(28, 40))
    for seed in range(20):
        image, labels = compose_scene(items, classes, spec, torch.Generator().manual_seed(seed))
        assert image.shape == (1, 64, 64) and labels.shape == (64, 64) and labels.dtype == torch.int64
        assert 0 <= image.min() and image.max() <= 1
        assert set(labels.unique().tolist()) <= {BACKGROUND, 1, 4, 8}
        assert (image[0][labels == BACKGROUND] <= spec.threshold).all()  # background is dark
        assert (image[0][labels != BACKGROUND] > spec.threshold).all()  # labelled pixels come from an item


def test_later_items_occlude_earlier_ones():
    items, classes = _pool()
    spec = SceneSpec(size=40, items=(2, 2), item_size=(40, 40))  # both items cover the whole canvas
    seen = set()
    for seed in range(30):
        generator = torch.Generator().manual_seed(seed)
        _, labels = compose_scene(items, classes, spec, generator)
        # replay the draws: the second pick is on top wherever it has a bright pixel
        replay = torch.Generator().manual_seed(seed)
        torch.randint(2, 3, (), generator=replay)
        picks = torch.randint(3, (2,), generator=replay).tolist()
        if picks[1] == 1:  # a solid item on top covers everything
            assert (labels == 8).all()
        seen.add(tuple(picks))
    assert len(seen) > 3


def test_dataset_is_a_pure_function_of_seed_and_index():
    items, classes = _pool()
    spec = SceneSpec(size=48, item_size=(20, 40))
    a, b = FashionScenes(items, classes, 10, spec, seed=1), FashionScenes(items, classes, 10, spec, seed=1)
    c = FashionScenes(items, classes, 10, spec, seed=2)
    assert len(a) == 10
    assert torch.equal(a[3][1], b[3][1]) and torch.equal(a[3][0], b[3][0]) and torch.equal(a[-1][1], a[9][1])
    assert not all(torch.equal(a[i][1], c[i][1]) for i in range(10))
    with pytest.raises(IndexError):
        a[10]
    norm = FashionScenes(items, classes, 2, spec, transform=lambda x: x * 2 - 1)
    assert norm[0][0].min() >= -1 and torch.equal(norm[0][1], FashionScenes(items, classes, 2, spec)[0][1])


def test_real_fashion_mnist_scenes():
    load = pytest.importorskip("nalaformer.data.fashion_mnist")
    try:
        images, labels = load.load_fashion_mnist("test")
    except FileNotFoundError:
        pytest.skip("Fashion-MNIST is not installed")
    scenes = FashionScenes(images[:500], labels[:500], 8, SceneSpec())
    fractions = []
    for i in range(len(scenes)):
        image, seg = scenes[i]
        assert image.shape == (1, 224, 224) and seg.max() <= 10
        fractions.append((seg != BACKGROUND).float().mean())
    assert 0.05 < float(sum(fractions)) / len(fractions) < 0.8  # a real mix of items and background


@pytest.mark.parametrize("kwargs,match", [
    (dict(size=20), "size"), (dict(items=(3, 2)), "items"), (dict(item_size=(0, 10)), "item_size"),
    (dict(size=64, item_size=(10, 100)), "item_size"), (dict(threshold=1.5), "threshold"),
])
def test_bad_spec(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SceneSpec(**kwargs)


def test_bad_pool():
    items, classes = _pool()
    with pytest.raises(ValueError, match="items"):
        FashionScenes(items.float(), classes, 3)
    with pytest.raises(ValueError, match="classes"):
        FashionScenes(items, classes[:2], 3)
    with pytest.raises(ValueError, match="num_scenes"):
        FashionScenes(items, classes, 0)
