"""The segmentation pipeline saved with every MAFT checkpoint (`pipeline(model=..., trust_remote_code=True)`).

Remote code (task `"image-segmentation"` in `custom_pipelines`): it imports only the files shipped with it, so the
vocabulary is a list of names and proposals come as `proposal_masks` or a callable. `maft_hf.inference.pipeline`
subclasses it and builds `segment()` on its functions (proposal specs, shipped vocabularies, caches, Eq. 9, ...).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Pipeline
from transformers.utils import logging

from .modeling_maft import pad_proposals, proposals_to_patch_visibility
from .processing_maft import load_image

logger = logging.get_logger(__name__)
# The 14 prompt templates of the released MAFT code, verbatim (maft_hf/vocab/prompt_templates.txt).
PROMPT_TEMPLATES = [
    "a photo of a {}.",
    "This is a photo of a {}",
    "There is a {} in the scene",
    "There is the {} in the scene",
    "a photo of a {} in the scene",
    "a photo of a small {}.",
    "a photo of a medium {}.",
    "a photo of a large {}.",
    "This is a photo of a small {}.",
    "This is a photo of a medium {}.",
    "This is a photo of a large {}.",
    "There is a small {} in the scene.",
    "There is a medium {} in the scene.",
    "There is a large {} in the scene.",
]


def compute_text_classifier(model, tokenizer, names, templates, max_length: int, device, batch_size: int = 256):
    """`(C, projection_dim)` float32: per class the normalised mean of its normalised prompt embeddings. Prompts run
    in batches padded to their longest (CLIP pools at the first end-of-text token, so padding changes nothing)."""
    prompts = [template.format(name) for name in names for template in templates]
    embeddings = []
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start : start + batch_size]
            tokens = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            tokens = {k: tokens[k].to(device) for k in ("input_ids", "attention_mask") if k in tokens}
            features = model.get_text_features(**tokens)
            embeddings.append(F.normalize(getattr(features, "pooler_output", features).float(), dim=-1))
    classifier = torch.cat(embeddings).reshape(len(names), len(templates), -1).mean(dim=1)
    return F.normalize(classifier, dim=-1)


def patch_grid_masks(masks: torch.Tensor, model, input_size: int) -> torch.Tensor:
    """`(N, H, W)` probabilities -> `(N, rows, cols)` bool patch visibility by the model's own rule (resize to the
    grid, threshold), so the model gives exactly the embeddings of the full-size masks."""
    vision = model.config.vision_config
    grid = (input_size // vision.patch_size, input_size // vision.patch_size)
    visible = proposals_to_patch_visibility(masks[None].float(), grid, vision.mask_threshold)
    return visible.reshape(masks.shape[0], *grid)


def classify_proposals(model, pixel_values, proposal_masks, text_classifier, proposal_valid_mask=None):
    """`(B, N, C)` logits `exp(logit_scale) * cos(mask embedding, class embedding)` of paper Eq. 1, from `(B, 3, S, S)`
    pixel values and `(B, N, H, W)` masks (padded entries, False in `proposal_valid_mask`, get logits too: ignore
    them). Gradients flow unless the caller disables them."""
    features = model.get_mask_features(pixel_values, proposal_masks, proposal_valid_mask=proposal_valid_mask)
    mask_embeds = F.normalize(features.pooler_output, dim=-1)
    text_embeds = F.normalize(text_classifier.to(device=mask_embeds.device, dtype=mask_embeds.dtype), dim=-1)
    return model.logit_scale.exp() * mask_embeds @ text_embeds.t()


def masks_from_user(masks, size: tuple[int, int]) -> SimpleNamespace:
    """Proposals without class scores, `masks (N, H, W)` float at `size`, from `(N, H, W)` masks in [0, 1] or an
    `(H, W)` integer label map (one mask per id, 255 = none)."""
    tensor = torch.as_tensor(np.asarray(masks)) if not isinstance(masks, torch.Tensor) else masks
    if tensor.ndim == 2 and not tensor.is_floating_point() and tensor.dtype != torch.bool:
        ids = [i for i in tensor.unique().tolist() if i != 255]
        tensor = torch.stack([tensor == i for i in ids]) if ids else tensor[None, :0]
    if tensor.ndim != 3 or tensor.shape[0] == 0:
        raise ValueError(f"Expected (N >= 1, H, W) masks or an (H, W) label map, got shape {tuple(tensor.shape)}.")
    tensor = tensor.float()
    if tensor.isnan().any() or tensor.min() < 0 or tensor.max() > 1:
        raise ValueError("Proposal masks must lie in [0, 1].")
    if tuple(tensor.shape[-2:]) != tuple(size):
        tensor = F.interpolate(tensor[None], size=size, mode="bilinear", align_corners=False)[0]
    return SimpleNamespace(masks=tensor, class_scores=None)


class OpenVocabularySegmentationPipeline(Pipeline):
    """Open-vocabulary semantic segmentation: `pipe(images, candidate_labels=[...], proposal_masks=... or
    proposal_generator=..., templates=)` (`ensemble_weight` needs maft_hf). Per image: `"segmentation"` `(H, W)`
    indices into `"class_names"`, and `"scores"` `(N, C)` per-proposal class scores."""

    # Per-call options of `_forward` and their conversion; a subclass adds its own.
    forward_options = {"ensemble_weight": float, "templates": list, "chunk_classes": int}
    _load_processor = False
    _load_image_processor = True
    _load_feature_extractor = False
    _load_tokenizer = True

    def __init__(self, *args, **kwargs):
        self._classifiers: dict = {}
        super().__init__(*args, **kwargs)

    # Hooks that maft_hf.inference.pipeline overrides with the package's fuller versions.
    def vocabulary(self, candidate_labels) -> list[str]:
        if isinstance(candidate_labels, str) or not all(isinstance(n, str) and n.strip() for n in candidate_labels):
            raise ValueError(f"candidate_labels must be a list of non-empty class names, got {candidate_labels!r}.")
        names = [name.strip() for name in candidate_labels]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"candidate_labels must be a non-empty list without duplicate names, got {names}.")
        return names

    def resolve_generator(self, generator):
        if isinstance(generator, str) or not callable(generator):
            raise ValueError(
                f"Without maft_hf installed, proposal_generator must be a callable (images -> masks), got "
                f"{generator!r}; pass proposal_masks=, or install maft_hf for spec strings such as 'grid:4'."
            )
        return generator

    def text_classifier(self, names: list[str], templates) -> torch.Tensor:
        """`(C, projection_dim)` classifier of [`compute_text_classifier`], cached per names and templates."""
        templates = list(PROMPT_TEMPLATES if templates is None else templates)
        key = (tuple(names), tuple(templates))
        if key not in self._classifiers:
            limit = min(self.model.config.text_config.max_position_embeddings, self.tokenizer.model_max_length)
            classifier = compute_text_classifier(self.model, self.tokenizer, names, templates, limit, self.device)
            self._classifiers[key] = classifier
        return self._classifiers[key]

    # transformers Pipeline steps
    def __call__(self, images, candidate_labels=None, **kwargs):
        if candidate_labels is None:
            raise ValueError("candidate_labels is required: the class names to segment.")
        if isinstance(images, (list, tuple)) and len(images) == 0:
            raise ValueError("No images were given; expected at least one image.")
        images = list(images) if isinstance(images, tuple) else images
        return super().__call__(images, candidate_labels=candidate_labels, **kwargs)

    def _sanitize_parameters(self, candidate_labels=None, proposal_generator=None, proposal_masks=None, **options):
        unknown = set(options) - set(self.forward_options)
        if unknown:
            raise ValueError(f"Unknown arguments for {type(self).__name__}: {sorted(unknown)}.")
        preprocess = {"proposal_masks": proposal_masks} if proposal_masks is not None else {}
        if proposal_generator is not None:
            preprocess["proposal_generator"] = self.resolve_generator(proposal_generator)
        forward = {key: self.forward_options[key](value) for key, value in options.items() if value is not None}
        if candidate_labels is not None:
            forward["candidate_labels"] = self.vocabulary(candidate_labels)
        return preprocess, forward, {}

    def preprocess(self, image, proposal_generator=None, proposal_masks=None):
        picture = load_image(image)
        size = (picture.height, picture.width)
        if proposal_masks is not None:
            item = masks_from_user(proposal_masks, size)
        elif proposal_generator is None:
            raise ValueError(
                "A proposal generator is required: pass proposal_generator= (here or to pipeline()) or proposal_masks=."
            )
        else:
            (item,) = proposal_generator([picture])
            item = item if hasattr(item, "masks") else masks_from_user(item, size)
            if tuple(item.masks.shape[-2:]) != size:
                raise ValueError(f"Proposal masks must have the image's size {size}, got {tuple(item.masks.shape)}.")
        pixel_values = self.image_processor([picture], return_tensors="pt")["pixel_values"]
        grid_masks = patch_grid_masks(item.masks, self.model, pixel_values.shape[-1])
        return {"pixel_values": pixel_values, "grid_masks": grid_masks[None], "proposals": item}

    def _forward(self, inputs, candidate_labels=None, ensemble_weight=0.7, templates=None, chunk_classes=None):
        # A batch (batch_size > 1) arrives padded by transformers' collate function, proposals as a list.
        batched = isinstance(inputs["proposals"], list)
        proposals = inputs["proposals"] if batched else [inputs["proposals"]]
        if ensemble_weight and any(getattr(item, "class_scores", None) is not None for item in proposals):
            logger.warning_once("The ensemble with the generator's class scores needs maft_hf: MAFT's scores alone.")
        text = self.text_classifier(candidate_labels, templates)
        grid_masks, valid = pad_proposals([m[: p.masks.shape[0]] for m, p in zip(inputs["grid_masks"], proposals)])
        logits = classify_proposals(
            self.model, inputs["pixel_values"], grid_masks.to(self.device), text, valid.to(self.device)
        )
        maps, scores = [], []
        for index, item in enumerate(proposals):
            scores.append(logits[index, : item.masks.shape[0]].float().softmax(dim=-1))
            flat = item.masks.to(device=scores[-1].device, dtype=torch.float32).flatten(1)
            maps.append((scores[-1].t() @ flat).argmax(dim=0).reshape(item.masks.shape[1:]))
        if not batched:
            return {"segmentation": maps[0][None], "scores": scores[0][None], "class_names": candidate_labels}
        return {"segmentation": maps, "scores": scores, "class_names": [candidate_labels] * len(maps)}

    def postprocess(self, outputs):
        # One image; transformers' unbatching gives each tensor a leading dimension of 1.
        return {
            "segmentation": outputs["segmentation"][0],
            "class_names": list(outputs["class_names"]),
            "scores": outputs["scores"][0],
        }
