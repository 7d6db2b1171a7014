"""The segmentation pipeline saved with every MAFT checkpoint (`pipeline(model=..., trust_remote_code=True)`).

It is remote code (task `"image-segmentation"` under `custom_pipelines`), so it imports only the files shipped with
it: vocabulary as a list of names, proposals as `proposal_masks` or a callable. `maft_hf.inference.pipeline`
subclasses it, adding proposal specs, shipped vocabularies, the classifier cache and the ensemble (paper Eq. 9).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Pipeline
from transformers.utils import logging

from .modeling_maft import pad_proposals, proposals_to_patch_visibility
from .processing_maft import load_image

logger = logging.get_logger(__name__)
TASK = "image-segmentation"
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


class _Masks:
    """Proposals without class scores: `masks (N, H, W)` float in [0, 1]."""

    class_scores = None
    class_names = None

    def __init__(self, masks):
        self.masks = masks

    @property
    def num_proposals(self) -> int:
        return self.masks.shape[0]


def masks_from_user(masks, size: tuple[int, int]) -> _Masks:
    """`(N, H, W)` masks in [0, 1] or an `(H, W)` integer label map (one mask per id, 255 = none), at `size`."""
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
    return _Masks(tensor)


class OpenVocabularySegmentationPipeline(Pipeline):
    """Open-vocabulary semantic segmentation: `pipe(images, candidate_labels=[...], proposal_masks=... or
    proposal_generator=..., ensemble_weight=, templates=)`. Per image: `"segmentation"` `(H, W)` indices into
    `"class_names"`, and `"scores"` `(N, C)` per-proposal class scores."""

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

    def user_proposals(self, masks, size: tuple[int, int]):
        return masks_from_user(masks, size)

    def text_classifier(self, names: list[str], templates) -> torch.Tensor:
        """`(C, projection_dim)`: per class the normalised mean of the normalised prompt embeddings (cached)."""
        templates = list(PROMPT_TEMPLATES if templates is None else templates)
        key = (tuple(names), tuple(templates))
        if key not in self._classifiers:
            text_config = self.model.config.text_config
            limit = min(text_config.max_position_embeddings, self.tokenizer.model_max_length)
            prompts = [template.format(name) for name in names for template in templates]
            tokens = self.tokenizer(prompts, padding=True, truncation=True, max_length=limit, return_tensors="pt")
            tokens = {k: tokens[k].to(self.device) for k in ("input_ids", "attention_mask") if k in tokens}
            with torch.no_grad():
                features = self.model.get_text_features(**tokens)
            features = F.normalize(getattr(features, "pooler_output", features).float(), dim=-1)
            classifier = features.reshape(len(names), len(templates), -1).mean(dim=1)
            self._classifiers[key] = F.normalize(classifier, dim=-1)
        return self._classifiers[key]

    def class_scores(self, logits, proposals, names, ensemble_weight) -> torch.Tensor:
        if ensemble_weight and getattr(proposals, "class_scores", None) is not None:
            logger.warning_once("The ensemble with the generator's class scores needs maft_hf: MAFT's scores alone.")
        return logits.float().softmax(dim=-1)

    def semantic_map(self, scores, masks, chunk_classes=None) -> torch.Tensor:
        """`argmax_c sum_n scores[n, c] masks[n]`, `(H, W)`."""
        flat = masks.to(device=scores.device, dtype=torch.float32).flatten(1)
        return (scores.t() @ flat).argmax(dim=0).reshape(masks.shape[1:])

    # transformers Pipeline steps
    def __call__(self, images, candidate_labels=None, **kwargs):
        if candidate_labels is None:
            raise ValueError("candidate_labels is required: the class names to segment.")
        if isinstance(images, (list, tuple)) and len(images) == 0:
            raise ValueError("No images were given; expected at least one image.")
        images = list(images) if isinstance(images, tuple) else images
        return super().__call__(images, candidate_labels=candidate_labels, **kwargs)

    def _sanitize_parameters(
        self,
        candidate_labels=None,
        proposal_generator=None,
        proposal_masks=None,
        ensemble_weight=None,
        templates=None,
        chunk_classes=None,
        **unused,
    ):
        if unused:
            raise ValueError(f"Unknown arguments for {type(self).__name__}: {sorted(unused)}.")
        preprocess, forward = {}, {}
        if proposal_generator is not None:
            preprocess["proposal_generator"] = self.resolve_generator(proposal_generator)
        if proposal_masks is not None:
            preprocess["proposal_masks"] = proposal_masks
        if candidate_labels is not None:
            forward["candidate_labels"] = self.vocabulary(candidate_labels)
        if ensemble_weight is not None:
            forward["ensemble_weight"] = float(ensemble_weight)
        if templates is not None:
            forward["templates"] = list(templates)
        if chunk_classes is not None:
            forward["chunk_classes"] = int(chunk_classes)
        return preprocess, forward, {}

    def preprocess(self, image, proposal_generator=None, proposal_masks=None):
        picture = load_image(image)
        size = (picture.height, picture.width)
        if proposal_masks is not None:
            item = self.user_proposals(proposal_masks, size)
        else:
            generator = proposal_generator
            if generator is None:
                raise ValueError(
                    "A proposal generator is required: pass proposal_generator= (here or to pipeline()) or "
                    "proposal_masks=."
                )
            (item,) = generator([picture])
            item = item if hasattr(item, "masks") else self.user_proposals(item, size)
            if tuple(item.masks.shape[-2:]) != size:
                raise ValueError(f"Proposal masks must have the image's size {size}, got {tuple(item.masks.shape)}.")
        pixel_values = self.image_processor([picture], return_tensors="pt")["pixel_values"]
        vision = self.model.config.vision_config
        grid = (pixel_values.shape[-2] // vision.patch_size, pixel_values.shape[-1] // vision.patch_size)
        visible = proposals_to_patch_visibility(item.masks[None].float(), grid, vision.mask_threshold)
        return {
            "pixel_values": pixel_values,
            "grid_masks": visible.reshape(1, item.masks.shape[0], *grid),
            "proposals": item,
        }

    def _forward(self, inputs, candidate_labels=None, ensemble_weight=0.7, templates=None, chunk_classes=None):
        # A batch (batch_size > 1) arrives padded by transformers' collate function, proposals as a list.
        batched = isinstance(inputs["proposals"], list)
        proposals = inputs["proposals"] if batched else [inputs["proposals"]]
        text = self.text_classifier(candidate_labels, templates)
        grid_masks, valid = pad_proposals([m[: p.masks.shape[0]] for m, p in zip(inputs["grid_masks"], proposals)])
        features = self.model.get_mask_features(
            inputs["pixel_values"], grid_masks.to(self.device), proposal_valid_mask=valid.to(self.device)
        )
        mask_embeds = F.normalize(features.pooler_output, dim=-1)
        logits = self.model.logit_scale.exp() * mask_embeds @ F.normalize(text.to(mask_embeds), dim=-1).t()
        maps, scores = [], []
        for index, item in enumerate(proposals):
            scores.append(
                self.class_scores(logits[index, : item.masks.shape[0]], item, candidate_labels, ensemble_weight)
            )
            maps.append(self.semantic_map(scores[-1], item.masks.to(self.device), chunk_classes))
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
