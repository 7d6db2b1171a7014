"""The text classifier: parity with the template-ensemble formula, batching, caching."""

import os

import pytest
import torch
import torch.nn.functional as F

from maft_hf import MaskAwareCLIPModel
from maft_hf.inference.text_classifier import (
    TextClassifierCache,
    build_text_classifier,
    text_classifier_cache_key,
    text_tower_fingerprint,
)
from maft_hf.inference.vocabulary import load_prompt_templates
from maft_hf.testing import build_tiny_tokenizer, tiny_maft_config

NAMES = ["cat", "dog, puppy", "red car"]
SHORT_TEMPLATES = ["a {}.", "the {}", "{} here"]


@pytest.fixture
def model():
    return MaskAwareCLIPModel(tiny_maft_config()).eval()


@pytest.fixture
def tokenizer():
    return build_tiny_tokenizer()


def reference_classifier(model, tokenizer, names, templates):
    """The formula, one prompt at a time, through the text tower and projection directly."""
    max_length = model.config.text_config.max_position_embeddings
    rows = []
    with torch.no_grad():
        for name in names:
            embeddings = []
            for template in templates:
                ids = tokenizer(template.format(name), truncation=True, max_length=max_length, return_tensors="pt")
                pooled = model.text_model(input_ids=ids["input_ids"]).pooler_output
                embeddings.append(F.normalize(model.text_projection(pooled)[0], dim=-1))
            rows.append(F.normalize(torch.stack(embeddings).mean(0), dim=-1))
    return torch.stack(rows)


class CountingModel(torch.nn.Module):
    """Delegates to a model and counts `get_text_features` calls."""

    def __init__(self, model):
        super().__init__()
        self.inner = model
        self.config = model.config
        self.text_model = model.text_model
        self.text_projection = model.text_projection
        self.calls = 0

    def get_text_features(self, **kwargs):
        self.calls += 1
        return self.inner.get_text_features(**kwargs)


def test_matches_formula_with_synonyms_verbatim(model, tokenizer):
    weights = build_text_classifier(model, tokenizer, NAMES, templates=SHORT_TEMPLATES, batch_size=4)
    expected = reference_classifier(model, tokenizer, NAMES, SHORT_TEMPLATES)
    assert weights.shape == (3, model.config.projection_dim)
    assert weights.dtype == torch.float32
    torch.testing.assert_close(weights, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weights.norm(dim=-1), torch.ones(3))


def test_synonyms_are_one_prompt_not_an_average(model, tokenizer):
    verbatim = build_text_classifier(model, tokenizer, ["dog, puppy"], templates=SHORT_TEMPLATES)
    split = F.normalize(
        build_text_classifier(model, tokenizer, ["dog", "puppy"], templates=SHORT_TEMPLATES).mean(0), dim=-1
    )
    assert not torch.allclose(verbatim[0], split, atol=1e-3)


def test_default_templates_match_formula(model, tokenizer):
    templates = load_prompt_templates()
    weights = build_text_classifier(model, tokenizer, NAMES, batch_size=16)
    torch.testing.assert_close(weights, reference_classifier(model, tokenizer, NAMES, templates), atol=1e-5, rtol=1e-5)


def test_batch_size_does_not_matter(model, tokenizer):
    one = build_text_classifier(model, tokenizer, NAMES, templates=SHORT_TEMPLATES, batch_size=1)
    all_at_once = build_text_classifier(model, tokenizer, NAMES, templates=SHORT_TEMPLATES, batch_size=256)
    torch.testing.assert_close(one, all_at_once, atol=1e-6, rtol=1e-5)


def test_training_flag_restored(model, tokenizer):
    model.train()
    build_text_classifier(model, tokenizer, NAMES, templates=SHORT_TEMPLATES)
    assert model.training


def test_memory_cache_hit_skips_the_model(model, tokenizer):
    counting = CountingModel(model)
    cache = TextClassifierCache()
    first = build_text_classifier(counting, tokenizer, NAMES, templates=SHORT_TEMPLATES, cache=cache)
    calls = counting.calls
    assert calls > 0
    second = build_text_classifier(counting, tokenizer, NAMES, templates=SHORT_TEMPLATES, cache=cache)
    assert counting.calls == calls
    assert torch.equal(first, second)
    second.mul_(0)  # the caller's copy; the cached entry is untouched
    third = build_text_classifier(counting, tokenizer, NAMES, templates=SHORT_TEMPLATES, cache=cache)
    assert torch.equal(first, third) and counting.calls == calls


def test_cache_misses_on_other_names_templates_or_weights(model, tokenizer):
    counting = CountingModel(model)
    cache = TextClassifierCache()
    build_text_classifier(counting, tokenizer, NAMES, templates=SHORT_TEMPLATES, cache=cache)
    calls = counting.calls
    build_text_classifier(counting, tokenizer, NAMES[:2], templates=SHORT_TEMPLATES, cache=cache)
    assert counting.calls > calls
    calls = counting.calls
    build_text_classifier(counting, tokenizer, NAMES, templates=SHORT_TEMPLATES[:2], cache=cache)
    assert counting.calls > calls
    calls = counting.calls
    before = text_tower_fingerprint(model)
    with torch.no_grad():
        model.text_projection.weight.add_(0.01)
    assert text_tower_fingerprint(model) != before
    changed = build_text_classifier(counting, tokenizer, NAMES, templates=SHORT_TEMPLATES, cache=cache)
    assert counting.calls > calls
    torch.testing.assert_close(changed, reference_classifier(model, tokenizer, NAMES, SHORT_TEMPLATES))


def test_lru_evicts_oldest(model, tokenizer):
    cache = TextClassifierCache(max_entries=1)
    build_text_classifier(model, tokenizer, ["cat"], templates=SHORT_TEMPLATES, cache=cache)
    build_text_classifier(model, tokenizer, ["dog"], templates=SHORT_TEMPLATES, cache=cache)
    assert len(cache) == 1
    assert text_classifier_cache_key(model, tokenizer, ["dog"], SHORT_TEMPLATES) in cache
    assert text_classifier_cache_key(model, tokenizer, ["cat"], SHORT_TEMPLATES) not in cache


def test_key_depends_on_weights_not_on_the_instance(model, tokenizer):
    twin = MaskAwareCLIPModel(tiny_maft_config()).eval()
    twin.load_state_dict(model.state_dict())
    key = text_classifier_cache_key(model, tokenizer, NAMES, SHORT_TEMPLATES)
    assert text_classifier_cache_key(twin, tokenizer, NAMES, SHORT_TEMPLATES) == key
    with torch.no_grad():
        twin.vision_model.post_layernorm.weight.add_(1.0)  # vision weights do not matter for text embeddings
    assert text_classifier_cache_key(twin, tokenizer, NAMES, SHORT_TEMPLATES) == key
    with torch.no_grad():
        twin.text_model.final_layer_norm.bias.add_(1.0)
    assert text_classifier_cache_key(twin, tokenizer, NAMES, SHORT_TEMPLATES) != key


def test_disk_cache_round_trip(model, tokenizer, tmp_path):
    cache_dir = tmp_path / "cache"
    first = build_text_classifier(
        model, tokenizer, NAMES, templates=SHORT_TEMPLATES, cache=TextClassifierCache(cache_dir=cache_dir)
    )
    files = os.listdir(cache_dir)
    assert len(files) == 1 and files[0].endswith(".safetensors")

    # A fresh process-like state: a new cache object and a new model instance with the same weights.
    twin = MaskAwareCLIPModel(tiny_maft_config()).eval()
    twin.load_state_dict(model.state_dict())
    counting = CountingModel(twin)
    loaded = build_text_classifier(
        counting, tokenizer, NAMES, templates=SHORT_TEMPLATES, cache=TextClassifierCache(cache_dir=cache_dir)
    )
    assert counting.calls == 0
    assert torch.equal(loaded, first)

    # A directory path works as a disk-only cache too.
    again = build_text_classifier(counting, tokenizer, NAMES, templates=SHORT_TEMPLATES, cache=str(cache_dir))
    assert counting.calls == 0 and torch.equal(again, first)

    TextClassifierCache(cache_dir=cache_dir).clear(disk=True)
    assert os.listdir(cache_dir) == []


def test_disk_file_loads_with_safetensors(model, tokenizer, tmp_path):
    from safetensors import safe_open

    weights = build_text_classifier(model, tokenizer, NAMES, templates=SHORT_TEMPLATES, cache=tmp_path)
    (name,) = os.listdir(tmp_path)
    with safe_open(str(tmp_path / name), framework="pt") as f:
        assert torch.equal(f.get_tensor("text_classifier"), weights)
        assert "dog, puppy" in f.metadata()["class_names"]


def test_input_errors(model, tokenizer):
    with pytest.raises(ValueError, match="empty"):
        build_text_classifier(model, tokenizer, [])
    with pytest.raises(ValueError, match="duplicate"):
        build_text_classifier(model, tokenizer, ["cat", "cat"])
    with pytest.raises(ValueError, match="placeholder"):
        build_text_classifier(model, tokenizer, ["cat"], templates=["a photo"])
    with pytest.raises(ValueError, match="batch_size"):
        build_text_classifier(model, tokenizer, ["cat"], batch_size=0)


def test_fingerprint_recompute_after_data_writes(model):
    before = text_tower_fingerprint(model)
    model.text_projection.weight.data.add_(0.5)  # bypasses the version counter: the memo cannot see it
    assert text_tower_fingerprint(model) == before
    assert text_tower_fingerprint(model, recompute=True) != before
