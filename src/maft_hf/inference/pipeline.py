"""Segment any image with any vocabulary: a function API and a transformers pipeline.

Both run the same steps per image:

1. load the image as RGB (paths, PIL images of any mode, `(H, W[, 3|4])` arrays, `(3, H, W)` tensors; grayscale,
   palette and RGBA images are converted to RGB, alpha dropped);
2. class-agnostic proposals from a [`~maft_hf.proposals.ProposalGenerator`], masks `(N, H, W)` at the image size;
3. the text classifier of the vocabulary ([`~maft_hf.inference.text_classifier.build_text_classifier`], cached);
4. MAFT's class logits of every proposal ([`~maft_hf.inference.semantic_map.classify_proposals`]); the masks reach the model
   already resized to its patch grid and thresholded by the model's own rule (bilinear, `align_corners=False`,
   `>= mask_threshold`), which is exactly what the model would do with the full-size masks, so images of different
   sizes and proposal counts share one forward pass;
5. per-proposal scores `softmax(logits)`, optionally ensembled with the generator's own class scores (paper Eq. 9,
   `ensemble_weight`), and the semantic map `argmax_c sum_n A[n, c] M[n, h, w]` at the image's size
   ([`~maft_hf.inference.semantic_map`]).

Example:

```python
>>> from maft_hf.inference.pipeline import segment
>>> from maft_hf.proposals import load_proposal_generator
>>> results = segment("street.jpg", ["road", "car", "building, edifice"], model, processor,  # doctest: +SKIP
...                   load_proposal_generator("grid:4"))
>>> results[0]["segmentation"].shape  # (H, W) of the image  # doctest: +SKIP
```
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import torch
from transformers import Pipeline

from ..model.images import load_images
from ..model.modeling_maft import MaskAwareCLIPModel, pad_proposals, proposals_to_patch_visibility
from ..proposals import ProposalGenerator, Proposals
from .semantic_map import (
    DEFAULT_ENSEMBLE_WEIGHT,
    classify_proposals,
    ensemble_class_scores,
    match_generator_scores,
    semantic_map,
)
from .text_classifier import TextClassifierCache, build_text_classifier
from .vocabulary import load_vocabulary

logger = logging.getLogger(__name__)

TASK_NAME = "open-vocabulary-segmentation"


# ---------------------------------------------------------------------------------------------------------------
# Shared steps
# ---------------------------------------------------------------------------------------------------------------
def resolve_proposal_generator(proposal_generator):
    """A [`ProposalGenerator`] (or any callable `images -> list[Proposals]`), or a spec string such as `"grid:4"`."""
    if proposal_generator is None:
        raise ValueError(
            "A proposal generator is required: pass a ProposalGenerator (e.g. maft_hf.proposals.UserMaskProposals) "
            "or a spec string such as 'grid:4' or 'mask2former:<checkpoint>'."
        )
    if isinstance(proposal_generator, str):
        from ..proposals import load_proposal_generator

        return load_proposal_generator(proposal_generator)
    if not callable(proposal_generator):
        raise ValueError(f"proposal_generator must be callable or a spec string, got {type(proposal_generator)}.")
    return proposal_generator


def check_proposals(proposals, images) -> list[Proposals]:
    """Check one [`Proposals`] per image, with masks at that image's size."""
    if not isinstance(proposals, (list, tuple)) or len(proposals) != len(images):
        got = len(proposals) if isinstance(proposals, (list, tuple)) else type(proposals).__name__
        raise ValueError(f"Expected one Proposals per image ({len(images)}), got {got}.")
    for index, (item, image) in enumerate(zip(proposals, images)):
        if not isinstance(item, Proposals):
            raise ValueError(f"Proposals of image {index} must be a maft_hf.proposals.Proposals, got {type(item)}.")
        if tuple(item.masks.shape[-2:]) != (image.height, image.width):
            raise ValueError(
                f"Proposal masks of image {index} must have the image's size (H, W) = ({image.height}, "
                f"{image.width}), got {tuple(item.masks.shape[-2:])}."
            )
    return list(proposals)


def patch_grid_masks(masks: torch.Tensor, model, input_size: int) -> torch.Tensor:
    """`(N, H, W)` proposal probabilities -> `(N, rows, cols)` bool patch visibility, by the model's own rule.

    Passing these to the model gives exactly the embeddings of the full-size masks: the model resizes masks to the
    patch grid (bilinear, `align_corners=False`) and thresholds them at `mask_threshold`; at grid size it does not
    resize, and `True >= threshold` for any threshold in (0, 1].
    """
    vision = model.config.vision_config
    grid = (input_size // vision.patch_size, input_size // vision.patch_size)
    visible = proposals_to_patch_visibility(masks[None].float(), grid, vision.mask_threshold)
    return visible.reshape(masks.shape[0], *grid)


def proposal_class_scores(
    logits: torch.Tensor, proposals: Proposals, class_names: Sequence[str], ensemble_weight: float | None
) -> torch.Tensor:
    """`(N, C)` scores `A` of one image: `softmax(logits)`, or the Eq. 9 ensemble with the generator's scores.

    The ensemble applies only when `ensemble_weight` is neither None nor 0 and the proposals carry class scores; vocabulary
    classes are matched to the generator's classes by name ([`match_generator_scores`]).
    """
    probs = logits.float().softmax(dim=-1)
    if not ensemble_weight or proposals.class_scores is None:
        return probs
    generator_probs, seen = match_generator_scores(proposals.class_scores, proposals.class_names, class_names)
    return ensemble_class_scores(probs, generator_probs.to(probs.device), seen.to(probs.device), ensemble_weight)


def _image_processor(processor):
    return getattr(processor, "image_processor", None) or processor


def _input_size(pixel_values: torch.Tensor) -> int:
    if pixel_values.ndim != 4 or pixel_values.shape[-1] != pixel_values.shape[-2]:
        raise ValueError(
            f"Expected square pixel_values (B, 3, S, S) from the processor, got {tuple(pixel_values.shape)}."
        )
    return int(pixel_values.shape[-1])


def _model_device(model) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


# ---------------------------------------------------------------------------------------------------------------
# Function API
# ---------------------------------------------------------------------------------------------------------------
def segment(
    images,
    class_names,
    model: MaskAwareCLIPModel,
    processor,
    proposal_generator: ProposalGenerator | str | None = None,
    ensemble_weight: float | None = DEFAULT_ENSEMBLE_WEIGHT,
    *,
    proposals: Sequence[Proposals] | None = None,
    templates: Sequence[str] | None = None,
    text_classifier: torch.Tensor | None = None,
    cache: TextClassifierCache | str | os.PathLike | None = None,
    batch_size: int = 4,
    chunk_classes: int | None = None,
) -> list[dict]:
    """Open-vocabulary semantic segmentation of one or more images.

    Args:
        images: a path, PIL image, `(H, W[, 3|4])` numpy array, `(3, H, W)` tensor, or a list of them (a
            `(B, 3, H, W)` tensor is a batch). Converted to RGB.
        class_names: the vocabulary: a list of names (synonyms as `"building, edifice"`), a shipped vocabulary name
            (e.g. `"ade20k_150"`) or a file ([`~maft_hf.inference.vocabulary.load_vocabulary`]). Empty vocabularies, empty
            names and duplicates raise `ValueError`.
        model: a `MaskAwareCLIPModel` (eval mode is used; its training flag is restored).
        processor: a `MAFTProcessor` (image processor + tokenizer), or a `MAFTImageProcessor` when
            `text_classifier` is given.
        proposal_generator: a [`ProposalGenerator`] or a spec string (`"grid:4"`, `"mask2former:<ckpt>"`, ...).
            Not needed when `proposals` is given.
        ensemble_weight: `lambda` of paper Eq. 9 for the ensemble with the generator's own class scores (0.6-0.8 in
            the paper, default 0.7). It applies only when the proposals carry class scores (Mask2Former/OneFormer);
            `None` or `0` uses MAFT's scores alone, as the released inference does.
        proposals: precomputed [`Proposals`], one per image, instead of calling the generator.
        templates: prompt templates (default: the 14 of the released code).
        text_classifier: a precomputed `(C, projection_dim)` classifier for `class_names`, skips the text tower.
        cache: text-classifier cache ([`TextClassifierCache`] or a directory).
        batch_size: images per forward pass of the image encoder.
        chunk_classes: class chunk of [`semantic_map`] (default: all classes).

    Returns:
        One dict per image, in order:
            - `"segmentation"`: `(H, W)` `torch.LongTensor` of class ids in `[0, C)` at the image's size;
            - `"class_names"`: the `C` names, id `i` = `class_names[i]`;
            - `"scores"`: `(N, C)` float tensor, the per-proposal class scores used for the map (softmax of MAFT's
              logits, or the Eq. 9 ensemble).
    """
    names = load_vocabulary(class_names)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    pil_images = load_images(images)
    generator = None if proposals is not None else resolve_proposal_generator(proposal_generator)
    if proposals is not None:
        proposals = check_proposals(list(proposals), pil_images)
    device = _model_device(model)

    was_training = model.training
    model.eval()
    try:
        if text_classifier is None:
            tokenizer = getattr(processor, "tokenizer", None)
            if tokenizer is None:
                raise ValueError("processor has no tokenizer: pass a MAFTProcessor or a precomputed text_classifier.")
            text_classifier = build_text_classifier(model, tokenizer, names, templates=templates, cache=cache)
        if text_classifier.ndim != 2 or text_classifier.shape[0] != len(names):
            raise ValueError(
                f"text_classifier must be (C={len(names)}, projection_dim), got {tuple(text_classifier.shape)}."
            )
        results = []
        for start in range(0, len(pil_images), batch_size):
            batch = pil_images[start : start + batch_size]
            batch_proposals = (
                proposals[start : start + batch_size]
                if proposals is not None
                else check_proposals(generator(batch), batch)
            )
            pixel_values = _image_processor(processor)(batch, return_tensors="pt")["pixel_values"].to(device)
            size = _input_size(pixel_values)
            grid_masks, valid = pad_proposals([patch_grid_masks(p.masks, model, size) for p in batch_proposals])
            with torch.no_grad():
                logits = classify_proposals(
                    model, pixel_values, grid_masks.to(device), text_classifier.to(device), valid.to(device)
                )
                for index, item in enumerate(batch_proposals):
                    scores = proposal_class_scores(logits[index, : item.num_proposals], item, names, ensemble_weight)
                    seg = semantic_map(scores, item.masks.to(device), from_logits=False, chunk_classes=chunk_classes)
                    results.append({"segmentation": seg.cpu(), "class_names": list(names), "scores": scores.cpu()})
    finally:
        model.train(was_training)
    return results


# ---------------------------------------------------------------------------------------------------------------
# transformers pipeline
# ---------------------------------------------------------------------------------------------------------------
class OpenVocabularySegmentationPipeline(Pipeline):
    r"""
    Open-vocabulary semantic segmentation with MAFT: `pipe(image, candidate_labels=[...])`.

    Registered as `"open-vocabulary-segmentation"` by [`register_pipeline`] (called on `import maft_hf`).
    The image processor and tokenizer are loaded from the checkpoint; proposals come from `proposal_generator`
    (given at construction or per call). Images run one at a time (`batch_size` other than 1 is refused); use
    [`segment`] for batched inference.

    Call arguments:
        images: one image or a list (paths, PIL, numpy arrays, tensors); converted to RGB.
        candidate_labels: the vocabulary (list of names, shipped vocabulary name or file). Required.
        proposal_generator: a [`ProposalGenerator`] or spec string (`"grid:4"`), overriding the constructor's.
        proposal_masks: user masks for this image instead of a generator (any format of
            `maft_hf.proposals.proposals_from_user_masks`).
        ensemble_weight: `lambda` of paper Eq. 9 (default 0.7 when the proposals carry class scores; 0: no ensemble).
        templates: prompt templates (default: the 14 of the released code).

    Returns:
        Per image, a dict with `"segmentation"` (`(H, W)` `torch.LongTensor` at the image size), `"class_names"` and
        `"scores"` (`(N, C)` per-proposal class scores); a list of them for a list of images.

    Example:

    ```python
    >>> from transformers import pipeline
    >>> import maft_hf
    >>> pipe = pipeline(
    ...     "open-vocabulary-segmentation", model="path/to/maft", proposal_generator="grid:4"
    ... )  # doctest: +SKIP
    >>> out = pipe("street.jpg", candidate_labels=["road", "car", "building, edifice"])  # doctest: +SKIP
    >>> out["segmentation"].shape  # (H, W) of the image  # doctest: +SKIP
    ```"""

    _load_processor = False
    _load_image_processor = True
    _load_feature_extractor = False
    _load_tokenizer = True

    def __init__(self, *args, text_classifier_cache: TextClassifierCache | None = None, **kwargs):
        self.text_classifier_cache = (
            text_classifier_cache if text_classifier_cache is not None else TextClassifierCache()
        )
        super().__init__(*args, **kwargs)
        if self._batch_size not in (None, 1):
            raise ValueError(f"{type(self).__name__} runs one image at a time; got batch_size={self._batch_size}.")

    def __call__(self, images, candidate_labels=None, **kwargs):
        if kwargs.get("batch_size") not in (None, 1):
            raise ValueError(
                f"{type(self).__name__} runs one image at a time; got batch_size={kwargs['batch_size']}. "
                "Use maft_hf.inference.pipeline.segment for batched inference."
            )
        if candidate_labels is None:
            raise ValueError("candidate_labels is required: the class names to segment.")
        if isinstance(images, (list, tuple)) and len(images) == 0:
            raise ValueError("No images were given; expected at least one image.")
        if isinstance(images, tuple):
            images = list(images)
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
        preprocess, forward, postprocess = {}, {}, {}
        if candidate_labels is not None:
            preprocess["candidate_labels"] = load_vocabulary(candidate_labels)
        if proposal_generator is not None:
            preprocess["proposal_generator"] = resolve_proposal_generator(proposal_generator)
        if proposal_masks is not None:
            preprocess["proposal_masks"] = proposal_masks
        if ensemble_weight is not None:
            forward["ensemble_weight"] = float(ensemble_weight)
        if templates is not None:
            forward["templates"] = list(templates)
        if chunk_classes is not None:
            forward["chunk_classes"] = int(chunk_classes)
        return preprocess, forward, postprocess

    def preprocess(self, image, candidate_labels=None, proposal_generator=None, proposal_masks=None):
        if candidate_labels is None:
            raise ValueError("candidate_labels is required: the class names to segment.")
        (picture,) = load_images(image)
        if proposal_masks is not None:
            from ..proposals.user_masks import proposals_from_user_masks

            item = proposals_from_user_masks(proposal_masks, image_size=(picture.height, picture.width))
        else:
            (item,) = check_proposals(resolve_proposal_generator(proposal_generator)([picture]), [picture])
        pixel_values = self.image_processor([picture], return_tensors="pt")["pixel_values"]
        grid_masks = patch_grid_masks(item.masks, self.model, _input_size(pixel_values))
        return {
            "pixel_values": pixel_values,
            "grid_masks": grid_masks[None],
            "proposals": item,
            "candidate_labels": candidate_labels,
        }

    def _forward(self, model_inputs, ensemble_weight=DEFAULT_ENSEMBLE_WEIGHT, templates=None, chunk_classes=None):
        names = model_inputs["candidate_labels"]
        item: Proposals = model_inputs["proposals"]
        text_classifier = build_text_classifier(
            self.model, self.tokenizer, names, templates=templates, cache=self.text_classifier_cache, device=self.device
        )
        logits = classify_proposals(
            self.model, model_inputs["pixel_values"], model_inputs["grid_masks"], text_classifier
        )
        scores = proposal_class_scores(logits[0], item, names, ensemble_weight)
        seg = semantic_map(scores, item.masks.to(scores.device), from_logits=False, chunk_classes=chunk_classes)
        return {"segmentation": seg, "scores": scores, "class_names": names}

    def postprocess(self, model_outputs):
        return {
            "segmentation": model_outputs["segmentation"],
            "class_names": list(model_outputs["class_names"]),
            "scores": model_outputs["scores"],
        }


def register_pipeline() -> None:
    """Register [`OpenVocabularySegmentationPipeline`] as `"open-vocabulary-segmentation"` (idempotent)."""
    from transformers.pipelines import PIPELINE_REGISTRY

    current = PIPELINE_REGISTRY.supported_tasks.get(TASK_NAME)
    if current is not None and current.get("impl") is OpenVocabularySegmentationPipeline:
        return
    PIPELINE_REGISTRY.register_pipeline(
        TASK_NAME,
        pipeline_class=OpenVocabularySegmentationPipeline,
        pt_model=MaskAwareCLIPModel,
        type="multimodal",
    )


__all__ = [
    "OpenVocabularySegmentationPipeline",
    "check_proposals",
    "patch_grid_masks",
    "proposal_class_scores",
    "register_pipeline",
    "segment",
]
