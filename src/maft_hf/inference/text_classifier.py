"""The text classifier of MAFT: one L2-normalised embedding per class name, averaged over prompt templates.

For class `c` with name `name_c` and templates `t_1 .. t_T` (the 14 of the released code by default):

    e_{c,t} = normalize(text_projection(text_model(t.format(name_c))))
    w_c     = normalize(mean_t e_{c,t})

A name with comma-separated synonyms (`"building, edifice"`) goes into each template verbatim as one string
(`"a photo of a building, edifice."`), as the released code does; synonyms are not embedded separately.

Classifiers are expensive for large vocabularies (847 classes x 14 templates = 11,858 prompts), so
[`build_text_classifier`] can use a [`TextClassifierCache`]: an in-memory LRU plus an optional directory of
safetensors files.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .vocabulary import load_prompt_templates, validate_templates, validate_vocabulary

CACHE_FORMAT_VERSION = "maft_hf.text_classifier/1"

# model -> (state signature, sha256 of the text-tower weights); see `text_tower_fingerprint`.
_FINGERPRINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def text_tower_parameters(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """`(name, tensor)` of every weight that changes text embeddings: `text_model.*` and `text_projection.*`.

    For a model without those attributes (not a CLIP model), every parameter and buffer is used.
    """
    parts = [(prefix, getattr(model, prefix, None)) for prefix in ("text_model", "text_projection")]
    if any(module is None for _, module in parts):
        return sorted(list(model.named_parameters()) + list(model.named_buffers()), key=lambda item: item[0])
    tensors = []
    for prefix, module in parts:
        tensors += [(f"{prefix}.{n}", t) for n, t in module.named_parameters()]
        tensors += [(f"{prefix}.{n}", t) for n, t in module.named_buffers()]
    return sorted(tensors, key=lambda item: item[0])


def text_tower_fingerprint(model: torch.nn.Module, recompute: bool = False) -> str:
    """SHA-256 (hex) of the names, shapes, dtypes and raw bytes of the text-tower weights.

    The hash reads every weight once (about 0.1 s for CLIP ViT-B/16's 63M text parameters) and is memoised per
    model; it is recomputed whenever a weight changes (a tensor's storage pointer or in-place version counter
    differs), so optimiser steps, in-place edits under `torch.no_grad()` and `load_state_dict` never serve a stale
    classifier. Writes through `tensor.data` bypass the version counter: after those, pass `recompute=True` once.
    """
    tensors = text_tower_parameters(model)
    signature = tuple((name, t.data_ptr(), t._version, tuple(t.shape), str(t.dtype)) for name, t in tensors)
    try:
        memo = _FINGERPRINTS.get(model)
    except TypeError:  # not weak-referenceable
        memo = None
    if memo is not None and memo[0] == signature and not recompute:
        return memo[1]
    digest = hashlib.sha256()
    for name, tensor in tensors:
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
        data = tensor.detach().to("cpu").contiguous()
        if data.numel():
            digest.update(data.reshape(-1).view(torch.uint8).numpy())
    fingerprint = digest.hexdigest()
    try:
        _FINGERPRINTS[model] = (signature, fingerprint)
    except TypeError:
        pass
    return fingerprint


def text_classifier_cache_key(model, tokenizer, class_names: Sequence[str], templates: Sequence[str]) -> str:
    """The cache key: SHA-256 (hex) of a JSON record of everything the classifier depends on.

    The record holds: a format version, [`text_tower_fingerprint`] of the model (a hash of the text-tower weights,
    so two checkpoints with the same text tower share entries and a changed weight never hits), the tokenizer's
    class, `name_or_path`, vocabulary size and the maximum prompt length used, the templates and the class names
    (both exact strings, in order).
    """
    record = {
        "format": CACHE_FORMAT_VERSION,
        "text_tower": text_tower_fingerprint(model),
        "tokenizer": [
            type(tokenizer).__name__,
            str(getattr(tokenizer, "name_or_path", "")),
            len(tokenizer),
            prompt_max_length(model, tokenizer),
        ],
        "templates": list(templates),
        "class_names": list(class_names),
    }
    return hashlib.sha256(json.dumps(record, ensure_ascii=False).encode("utf-8")).hexdigest()


class TextClassifierCache:
    """Cache of text classifiers: an in-memory LRU of `max_entries` tensors and, optionally, a directory.

    On disk each entry is `<cache_dir>/<key>.safetensors` with one tensor, `"text_classifier"` `(C, D)` float, and
    the class names and templates in the metadata (for inspection only; the key alone decides a hit). Files are
    written atomically. Entries are kept on CPU.

    Args:
        max_entries: size of the in-memory LRU (0 disables it).
        cache_dir: directory for persistent entries, created when needed; `None` keeps the cache in memory only.

    Example:

    ```python
    >>> cache = TextClassifierCache(cache_dir="~/.cache/maft_hf/text_classifiers")  # doctest: +SKIP
    >>> weights = build_text_classifier(model, tokenizer, ["cat", "dog"], cache=cache)  # doctest: +SKIP
    ```"""

    def __init__(self, max_entries: int = 16, cache_dir: str | os.PathLike | None = None):
        if max_entries < 0:
            raise ValueError(f"max_entries must be >= 0, got {max_entries}.")
        self.max_entries = max_entries
        self.cache_dir = os.path.expanduser(os.fspath(cache_dir)) if cache_dir is not None else None
        self._memory: OrderedDict[str, torch.Tensor] = OrderedDict()

    def __len__(self) -> int:
        return len(self._memory)

    def __contains__(self, key: str) -> bool:
        return key in self._memory or (self.cache_dir is not None and os.path.isfile(self._path(key)))

    def _path(self, key: str) -> str:
        return os.path.join(self.cache_dir, f"{key}.safetensors")

    def _remember(self, key: str, tensor: torch.Tensor) -> None:
        if self.max_entries == 0:
            return
        self._memory[key] = tensor
        self._memory.move_to_end(key)
        while len(self._memory) > self.max_entries:
            self._memory.popitem(last=False)

    def get(self, key: str) -> torch.Tensor | None:
        """The stored classifier (a CPU tensor that the caller must not modify in place), or None."""
        if key in self._memory:
            self._memory.move_to_end(key)
            return self._memory[key]
        if self.cache_dir is not None and os.path.isfile(self._path(key)):
            from safetensors.torch import load_file

            try:
                tensor = load_file(self._path(key))["text_classifier"]
            except Exception as err:  # noqa: BLE001 - a damaged entry is a miss: it is recomputed and rewritten
                warnings.warn(
                    f"Ignoring the damaged text-classifier cache file {self._path(key)} ({err}).", stacklevel=2
                )
                return None
            self._remember(key, tensor)
            return tensor
        return None

    def put(self, key: str, tensor: torch.Tensor, metadata: dict[str, str] | None = None) -> None:
        """Store `tensor` under `key` in memory and, with a `cache_dir`, on disk."""
        tensor = tensor.detach().to("cpu").contiguous()
        self._remember(key, tensor)
        if self.cache_dir is None:
            return
        from safetensors.torch import save_file

        os.makedirs(self.cache_dir, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.cache_dir, suffix=".tmp")
        os.close(handle)
        try:
            save_file({"text_classifier": tensor}, temporary, metadata=metadata)
            os.replace(temporary, self._path(key))
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)

    def clear(self, disk: bool = False) -> None:
        """Empty the in-memory LRU, and with `disk=True` delete this cache's `*.safetensors` files too."""
        self._memory.clear()
        if disk and self.cache_dir is not None and os.path.isdir(self.cache_dir):
            for entry in os.listdir(self.cache_dir):
                if entry.endswith(".safetensors") and len(entry) == 64 + len(".safetensors"):
                    os.remove(os.path.join(self.cache_dir, entry))


def prompt_max_length(model, tokenizer) -> int:
    """Longest prompt in tokens: the text tower's `max_position_embeddings`, capped by the tokenizer's limit."""
    limits = []
    config = getattr(model, "config", None)
    text_config = getattr(config, "text_config", config)
    if getattr(text_config, "max_position_embeddings", None):
        limits.append(int(text_config.max_position_embeddings))
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    if tokenizer_limit and tokenizer_limit < 1_000_000:
        limits.append(int(tokenizer_limit))
    if not limits:
        raise ValueError("Cannot tell the maximum prompt length: neither the model nor the tokenizer states one.")
    return min(limits)


def _pooled(output) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def embed_prompts(model, tokenizer, prompts: Sequence[str], batch_size: int = 256, device=None) -> torch.Tensor:
    """L2-normalised projected text embeddings of `prompts`, `(len(prompts), projection_dim)` float32.

    Prompts are tokenised in batches of `batch_size`, padded to the longest in the batch and truncated to
    [`prompt_max_length`]. CLIP's text tower is causal and pools at the first end-of-text token, so padding does
    not change an embedding.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    max_length = prompt_max_length(model, tokenizer)
    embeddings = []
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            tokens = tokenizer(
                list(prompts[start : start + batch_size]),
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            tokens = {k: v.to(device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
            features = _pooled(model.get_text_features(**tokens))
            embeddings.append(F.normalize(features.float(), dim=-1))
    return torch.cat(embeddings, dim=0)


def build_text_classifier(
    model,
    tokenizer,
    class_names: Sequence[str],
    templates: Sequence[str] | None = None,
    batch_size: int = 256,
    cache: TextClassifierCache | str | os.PathLike | None = None,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Text embeddings of a vocabulary, one row per class: `(C, projection_dim)` float32, rows of unit L2 norm.

    Row `c` is `normalize(mean_t normalize(get_text_features(t.format(class_names[c])).pooler_output))` over the
    templates `t`. Names go into the templates verbatim, synonyms included (`"a photo of a building, edifice."`).
    All `C * T` prompts are embedded in batches of `batch_size` under `torch.no_grad()`, in eval mode (the model's
    training flag is restored afterwards).

    Args:
        model: a `MaskAwareCLIPModel` or `CLIPModel` (anything with `get_text_features`).
        tokenizer: its CLIP tokenizer.
        class_names: the vocabulary, `C` names (checked by [`validate_vocabulary`]).
        templates: prompt templates with one `{}` each; default: the 14 of the released code
            ([`load_prompt_templates`]).
        batch_size: prompts per forward pass.
        cache: a [`TextClassifierCache`], or a directory (a disk-only cache there), or None for no cache. The key
            is [`text_classifier_cache_key`]: text-tower weight hash, tokenizer, templates and class names.
        device: where to run the text tower and return the result; default the model's device.

    Returns:
        `torch.FloatTensor` of shape `(C, projection_dim)`.

    Example:

    ```python
    >>> from maft_hf.inference.text_classifier import build_text_classifier
    >>> weights = build_text_classifier(model, tokenizer, ["cat", "building, edifice"])  # doctest: +SKIP
    >>> weights.shape  # doctest: +SKIP
    torch.Size([2, 512])
    ```"""
    class_names = validate_vocabulary(class_names)
    templates = validate_templates(load_prompt_templates() if templates is None else templates)
    if device is None:
        parameter = next(model.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
    device = torch.device(device)
    if cache is not None and not isinstance(cache, TextClassifierCache):
        cache = TextClassifierCache(max_entries=0, cache_dir=cache)

    key = None
    if cache is not None:
        key = text_classifier_cache_key(model, tokenizer, class_names, templates)
        hit = cache.get(key)
        if hit is not None:
            return hit.to(device=device, copy=True)

    prompts = [template.format(name) for name in class_names for template in templates]
    was_training = model.training
    model.eval()
    try:
        embeddings = embed_prompts(model, tokenizer, prompts, batch_size=batch_size, device=device)
    finally:
        model.train(was_training)
    classifier = embeddings.reshape(len(class_names), len(templates), -1).mean(dim=1)
    classifier = F.normalize(classifier, dim=-1)

    if cache is not None:
        metadata = {"class_names": json.dumps(class_names), "templates": json.dumps(templates)}
        cache.put(key, classifier, metadata=metadata)
    return classifier


__all__ = [
    "TextClassifierCache",
    "build_text_classifier",
    "embed_prompts",
    "prompt_max_length",
    "text_classifier_cache_key",
    "text_tower_fingerprint",
]
