import pytest
import torch

from nalaformer.data.mqar import IGNORE_INDEX, MQARSpec, make_mqar, mqar_accuracy


@pytest.mark.parametrize("seq_len,pairs", [(64, 4), (64, 16), (128, 8), (256, 64)])
def test_every_query_recalls_its_context_value(seq_len, pairs):
    spec = MQARSpec(seq_len=seq_len, num_kv_pairs=pairs, vocab_size=8192)
    inputs, labels = make_mqar(spec, 300, seed=1)
    assert inputs.shape == labels.shape == (300, seq_len) and inputs.dtype == labels.dtype == torch.int64
    context = 2 * pairs
    keys, values = inputs[:, 0:context:2], inputs[:, 1:context:2]
    assert ((keys >= 1) & (keys < 4096)).all() and ((values >= 4096) & (values < 8192)).all()
    assert all(len(set(row.tolist())) == pairs for row in keys)  # distinct keys per sequence
    assert (labels[:, :context] == IGNORE_INDEX).all()
    positions = labels != IGNORE_INDEX
    assert (positions.sum(1) == pairs).all()  # every key is queried once
    for row in range(300):
        lookup = dict(zip(keys[row].tolist(), values[row].tolist()))
        cols = positions[row].nonzero().flatten()
        assert ((cols - context) % 2 == 0).all()  # queries sit at even offsets after the context
        for col in cols.tolist():
            assert lookup[int(inputs[row, col])] == int(labels[row, col])


def test_deterministic_per_seed_and_power_law_gaps():
    spec = MQARSpec(seq_len=256, num_kv_pairs=4)
    a, la = make_mqar(spec, 2000, seed=3)
    b, lb = make_mqar(spec, 2000, seed=3)
    c, _ = make_mqar(spec, 2000, seed=4)
    assert torch.equal(a, b) and torch.equal(la, lb) and not torch.equal(a, c)
    slots = ((la != IGNORE_INDEX).nonzero()[:, 1] - 8) // 2  # query slot index, 0..space-1
    space = (256 - 8) // 2
    # power_a = 0.01: the law ~ g^-0.99 puts ~40% of queries in the first 5% of slots (uniform: ~5%)
    assert (slots < space // 20).float().mean() > 0.3
    uniform = MQARSpec(seq_len=256, num_kv_pairs=4, power_a=1.0)
    slots_u = ((make_mqar(uniform, 2000)[1] != IGNORE_INDEX).nonzero()[:, 1] - 8) // 2
    assert 0.02 < (slots_u < space // 20).float().mean() < 0.1


def test_filler_and_chunking():
    spec = MQARSpec(seq_len=64, num_kv_pairs=4, random_non_queries=False)
    inputs, labels = make_mqar(spec, 5000, seed=0)  # more than one generation chunk
    filler = (labels == IGNORE_INDEX)
    filler[:, :8] = False
    assert (inputs[filler] == 0).all()
    noisy, _ = make_mqar(MQARSpec(seq_len=64, num_kv_pairs=4), 50)
    assert (noisy[:, 8:] != 0).float().mean() > 0.99


def test_accuracy_counts_only_queries():
    inputs, labels = make_mqar(MQARSpec(seq_len=32, num_kv_pairs=2, vocab_size=64), 10)
    perfect = torch.nn.functional.one_hot(labels.clamp(min=0), 64).float()
    assert mqar_accuracy(perfect, labels) == (20, 20)
    wrong = torch.zeros_like(perfect)
    wrong[..., 0] = 1
    assert mqar_accuracy(wrong, labels) == (0, 20)


@pytest.mark.parametrize("kwargs,match", [
    (dict(seq_len=63), "seq_len"), (dict(seq_len=0), "seq_len"), (dict(num_kv_pairs=17, seq_len=64), "num_kv_pairs"),
    (dict(vocab_size=10, num_kv_pairs=8), "vocab_size"), (dict(power_a=0.0), "power_a"),
    (dict(num_kv_pairs=2.5), "num_kv_pairs"), (dict(power_a="x"), "power_a"),
])
def test_bad_settings_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MQARSpec(**kwargs)


def test_bad_count():
    with pytest.raises(ValueError, match="num_examples"):
        make_mqar(MQARSpec(), 0)
