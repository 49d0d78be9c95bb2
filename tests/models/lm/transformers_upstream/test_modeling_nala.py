"""transformers' common model tests on the NaLa LM, run as a model inside transformers is tested.

This file is ours; it runs only inside a transformers tests tree, as ``tests/models/nala/test_modeling_nala.py``
(``tests/models/lm/run_transformers_upstream.sh`` builds the tree and runs it; our own pytest run ignores
this folder). The shared testers (``CausalLMModelTester``, ``ModelTesterMixin``, ``GenerationTesterMixin``,
...) are transformers' own. A common test is skipped only where it cannot apply to a fixed-size recurrent
cache, with the reason, as transformers' Mamba / RWKV / RecurrentGemma tests do.
"""

import unittest

from transformers import is_torch_available
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.models.auto import modeling_auto
from transformers.testing_utils import require_torch

from ...causal_lm_tester import CausalLMModelTest, CausalLMModelTester

if is_torch_available():
    import torch

    from nalaformer.models.lm import NaLaCache, NaLaConfig, NaLaForCausalLM, NaLaModel

    # A model inside transformers is listed in the auto mappings by name; the common tests read these lists
    # (a base model is not trained with labels, a causal LM gets next-token labels). ``register()`` adds our
    # classes to the Auto classes themselves; this adds their names where an in-library model has them.
    modeling_auto.MODEL_MAPPING_NAMES.setdefault("nala", "NaLaModel")
    modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.setdefault("nala", "NaLaForCausalLM")

# This tree's (5.16.dev) gradient-checkpointing check mocks a layer's instance ``forward`` and counts its
# calls; transformers 5.24's GradientCheckpointingLayer recomputes the class ``forward`` instead, so the
# mock sees one call for every model (LlamaForCausalLM too). Where the layer still overrides ``__call__``
# (the releases this tree was written for) the check runs.
_OLD_CHECKPOINTING = is_torch_available() and GradientCheckpointingLayer.__call__ is not torch.nn.Module.__call__
_NEW_CHECKPOINTING_REASON = (
    "this tree's check counts calls of a mocked instance forward, which transformers >= 5.24 no longer "
    "recomputes (Llama fails it too); tests/models/lm/test_lm_modeling.py checks per-block recomputation")


class NaLaModelTester(CausalLMModelTester):
    config_class = NaLaConfig
    if is_torch_available():
        base_model_class = NaLaModel
        causal_lm_class = NaLaForCausalLM

    def __init__(self, parent, **kwargs):
        # every size explicitly (transformers' shared defaults differ between releases)
        dims = dict(batch_size=13, seq_length=7, is_training=True, use_input_mask=True, use_labels=True,
                    vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                    max_position_embeddings=512, pad_token_id=0, bos_token_id=1, eos_token_id=2)
        dims.update(kwargs)
        for name, value in dims.items():  # the base __init__ reads some of them before it sets them
            setattr(self, name, value)
        super().__init__(parent, **dims)


@require_torch
class NaLaModelTest(CausalLMModelTest, unittest.TestCase):
    model_tester_class = NaLaModelTester
    has_attentions = False  # linear attention has no attention matrix to return

    def test_left_padding_compatibility(self):
        # The common test reads ``has_attentions`` as "takes a padding mask"; NaLa does (padded tokens never
        # enter its state), it only has no attention matrix to return.
        self.has_attentions = True
        try:
            super().test_left_padding_compatibility()
        finally:
            self.has_attentions = False

    @unittest.skipUnless(_OLD_CHECKPOINTING, _NEW_CHECKPOINTING_REASON)
    def test_training_gradient_checkpointing(self):
        super().test_training_gradient_checkpointing()

    @unittest.skipUnless(_OLD_CHECKPOINTING, _NEW_CHECKPOINTING_REASON)
    def test_training_gradient_checkpointing_use_reentrant_false(self):
        super().test_training_gradient_checkpointing_use_reentrant_false()

    @unittest.skipUnless(_OLD_CHECKPOINTING, _NEW_CHECKPOINTING_REASON)
    def test_training_gradient_checkpointing_use_reentrant_true(self):
        super().test_training_gradient_checkpointing_use_reentrant_true()

    def _check_past_key_values_for_generate(self, batch_size, past_key_values, seq_length, config):
        """The NaLa cache: one fixed-size state per NaLa layer, growing keys/values per softmax layer."""
        self.assertIsInstance(past_key_values, NaLaCache)
        self.assertEqual(len(past_key_values), config.num_hidden_layers)
        self.assertEqual(past_key_values.get_seq_length(), seq_length)
        self.assertEqual(tuple(past_key_values.seen.shape), (batch_size,))
        heads, head_dim = config.num_attention_heads, config.head_dim
        for kind, state in zip(config.layer_types, past_key_values.states):
            if kind == "linear_attention":
                kv, k_sum, count = state.nala
                self.assertEqual(tuple(kv.shape), (batch_size, heads, 2 * head_dim, head_dim))
                self.assertEqual(tuple(k_sum.shape), (batch_size, heads, 2 * head_dim))
                self.assertEqual(tuple(count.shape), (batch_size,))
            else:
                self.assertEqual(tuple(state.keys.shape), (batch_size, seq_length, heads, head_dim))
                self.assertEqual(tuple(state.values.shape), (batch_size, seq_length, heads, head_dim))
            if config.short_conv_size:
                self.assertEqual(tuple(state.conv.shape), (batch_size, config.short_conv_size - 1, config.hidden_size))

    def _check_caches_are_equal(self, cache1, cache2):
        self.assertIsInstance(cache1, NaLaCache)
        self.assertIsInstance(cache2, NaLaCache)
        self.assertEqual(len(cache1), len(cache2))
        self.assertEqual(cache1.get_seq_length(), cache2.get_seq_length())
        torch.testing.assert_close(cache1.seen, cache2.seen)
        for state1, state2 in zip(cache1.states, cache2.states):
            torch.testing.assert_close(state1, state2)


class NaLaHybridModelTester(NaLaModelTester):
    def __init__(self, parent, **kwargs):
        super().__init__(parent, **{"layer_types": ["linear_attention", "full_attention"], "short_conv_size": 3,
                                    **kwargs})


@require_torch
class NaLaHybridModelTest(NaLaModelTest):
    """A hybrid: a NaLa layer and a softmax layer, with the short conv on v."""

    model_tester_class = NaLaHybridModelTester

