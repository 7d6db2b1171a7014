"""The text classifier of MAFT, `w_c = normalize(mean_t normalize(text_projection(text_model(t.format(name_c)))))`
over the 14 templates of the released code, and a cache for it: 847 classes x 14 templates are expensive.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Sequence

import torch

from ..model.pipeline_maft import compute_text_classifier
from .outputs import atomic_write
from .vocabulary import load_prompt_templates, validate_templates, validate_vocabulary

CACHE_FORMAT_VERSION = "maft_hf.text_classifier/1"

# model -> (state signature, sha256 of the text-tower weights); see `text_tower_fingerprint`.
_FINGERPRINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def text_tower_parameters(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """`(name, tensor)` of the weights of `text_model` and `text_projection` (all of them for a non-CLIP model)."""
    parts = {f"{name}.": getattr(model, name, None) for name in ("text_model", "text_projection")}
    if None in parts.values():
        parts = {"": model}
    tensors = [
        (prefix + name, tensor)
        for prefix, module in parts.items()
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]
    ]
    return sorted(tensors, key=lambda item: item[0])


def text_tower_fingerprint(model: torch.nn.Module, recompute: bool = False) -> str:
    """SHA-256 (hex) of the names, shapes, dtypes and bytes of the text-tower weights, memoised per model until a
    tensor's storage or version counter changes (writes through `tensor.data` bypass it: pass `recompute=True`)."""
    tensors = text_tower_parameters(model)
    signature = tuple((name, t.data_ptr(), t._version, tuple(t.shape), str(t.dtype)) for name, t in tensors)
    memo = _FINGERPRINTS.get(model)
    if memo is not None and memo[0] == signature and not recompute:
        return memo[1]
    digest = hashlib.sha256()
    for name, tensor in tensors:
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
        data = tensor.detach().to("cpu").contiguous()
        if data.numel():
            digest.update(data.reshape(-1).view(torch.uint8).numpy())
    _FINGERPRINTS[model] = (signature, digest.hexdigest())
    return digest.hexdigest()


def text_classifier_cache_key(model, tokenizer, class_names: Sequence[str], templates: Sequence[str]) -> str:
    """SHA-256 (hex) of everything the classifier depends on: a format version, [`text_tower_fingerprint`], the
    tokenizer (class, `name_or_path`, size, maximum prompt length), the templates and the class names."""
    tokenizer_id = [type(tokenizer).__name__, str(getattr(tokenizer, "name_or_path", "")), len(tokenizer)]
    record = {
        "format": CACHE_FORMAT_VERSION,
        "text_tower": text_tower_fingerprint(model),
        "tokenizer": [*tokenizer_id, prompt_max_length(model, tokenizer)],
        "templates": list(templates),
        "class_names": list(class_names),
    }
    return hashlib.sha256(json.dumps(record, ensure_ascii=False).encode("utf-8")).hexdigest()


class TextClassifierCache:
    """Text classifiers on CPU: an in-memory LRU of `max_entries` tensors (0: off) and, with `cache_dir`, atomically
    written `<cache_dir>/<key>.safetensors` files (tensor `"text_classifier"`; names and templates in the metadata for
    inspection only: the key alone decides a hit)."""

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
        if self.cache_dir is None or not os.path.isfile(self._path(key)):
            return None
        from safetensors.torch import load_file

        try:
            tensor = load_file(self._path(key))["text_classifier"]
        except Exception as err:  # noqa: BLE001 - a damaged entry is a miss: it is recomputed and rewritten
            warnings.warn(f"Ignoring the damaged text-classifier cache file {self._path(key)} ({err}).", stacklevel=2)
            return None
        self._remember(key, tensor)
        return tensor

    def put(self, key: str, tensor: torch.Tensor, metadata: dict[str, str] | None = None) -> None:
        """Store `tensor` under `key` in memory and, with a `cache_dir`, on disk."""
        tensor = tensor.detach().to("cpu").contiguous()
        self._remember(key, tensor)
        if self.cache_dir is None:
            return
        from safetensors.torch import save_file

        os.makedirs(self.cache_dir, exist_ok=True)
        atomic_write(
            self._path(key), lambda temporary: save_file({"text_classifier": tensor}, temporary, metadata=metadata)
        )

    def clear(self, disk: bool = False) -> None:
        """Empty the in-memory LRU, and with `disk=True` delete this cache's `*.safetensors` files too."""
        self._memory.clear()
        if disk and self.cache_dir is not None and os.path.isdir(self.cache_dir):
            for entry in os.listdir(self.cache_dir):
                if entry.endswith(".safetensors") and len(entry) == 64 + len(".safetensors"):
                    os.remove(os.path.join(self.cache_dir, entry))


def prompt_max_length(model, tokenizer) -> int:
    """Longest prompt in tokens: the text tower's `max_position_embeddings`, capped by the tokenizer's limit."""
    config = getattr(model, "config", None)
    limits = [getattr(getattr(config, "text_config", config), "max_position_embeddings", None)]
    limits.append(getattr(tokenizer, "model_max_length", None))
    limits = [int(limit) for limit in limits if limit and limit < 1_000_000]  # tokenizers without a limit say 1e30
    if not limits:
        raise ValueError("Cannot tell the maximum prompt length: neither the model nor the tokenizer states one.")
    return min(limits)


def model_device(model) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def build_text_classifier(
    model,
    tokenizer,
    class_names: Sequence[str],
    templates: Sequence[str] | None = None,
    batch_size: int = 256,
    cache: TextClassifierCache | str | os.PathLike | None = None,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Text embeddings of a vocabulary: `(C, projection_dim)` float32, rows of unit norm (the module's formula), the
    prompts run in eval mode. `cache`: a [`TextClassifierCache`] or a directory (disk-only cache)."""
    class_names = validate_vocabulary(class_names)
    templates = validate_templates(load_prompt_templates() if templates is None else templates)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    device = torch.device(device) if device is not None else model_device(model)
    if cache is not None and not isinstance(cache, TextClassifierCache):
        cache = TextClassifierCache(max_entries=0, cache_dir=cache)
    if cache is not None:
        key = text_classifier_cache_key(model, tokenizer, class_names, templates)
        hit = cache.get(key)
        if hit is not None:
            return hit.to(device=device, copy=True)
    max_length = prompt_max_length(model, tokenizer)
    was_training = model.training
    model.eval()
    try:
        classifier = compute_text_classifier(model, tokenizer, class_names, templates, max_length, device, batch_size)
    finally:
        model.train(was_training)
    if cache is not None:
        metadata = {"class_names": json.dumps(class_names), "templates": json.dumps(templates)}
        cache.put(key, classifier, metadata=metadata)
    return classifier
