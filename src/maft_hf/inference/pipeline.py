"""Segment any image with any vocabulary: a function API ([`segment`]) and a transformers pipeline built on it.

The steps are those of docs/inference.md; the model-level ones are the functions of [`maft_hf.model.pipeline_maft`],
the pipeline that checkpoints carry: patch-grid masks (so images of different sizes share a forward pass), logits.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..model import pipeline_maft
from ..model.images import image_to_tensor, load_images
from ..model.modeling_maft import MaskAwareCLIPModel, pad_proposals, validate_proposal_values
from ..model.pipeline_maft import classify_proposals, patch_grid_masks
from ..model.processing_maft import PREPROCESSING_MODES
from ..proposals import ProposalGenerator, Proposals
from .semantic_map import (
    DEFAULT_ENSEMBLE_WEIGHT,
    ENSEMBLE_FORMULAS,
    ensemble_class_scores,
    match_generator_scores,
    semantic_map,
)
from .text_classifier import TextClassifierCache, build_text_classifier, model_device
from .vocabulary import load_vocabulary

TASK_NAME = "open-vocabulary-segmentation"


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


def check_options(ensemble_weight, ensemble_formula: str, preprocessing: str, unlabeled_threshold: float) -> None:
    if ensemble_weight is not None and not 0.0 <= float(ensemble_weight) <= 1.0:
        raise ValueError(f"ensemble_weight must be in [0, 1] (or None), got {ensemble_weight}.")
    if ensemble_formula not in ENSEMBLE_FORMULAS:
        raise ValueError(f"ensemble_formula must be one of {ENSEMBLE_FORMULAS}, got {ensemble_formula!r}.")
    if preprocessing not in PREPROCESSING_MODES:
        raise ValueError(f"preprocessing must be one of {PREPROCESSING_MODES}, got {preprocessing!r}.")
    if not float(unlabeled_threshold) >= 0.0:
        raise ValueError(f"unlabeled_threshold must be >= 0, got {unlabeled_threshold}.")


def check_proposals(proposals, images) -> list[Proposals]:
    """Check one [`Proposals`] per image covering that image (masks or `image_size` at its size), values in [0, 1]."""
    if not isinstance(proposals, (list, tuple)) or len(proposals) != len(images):
        got = len(proposals) if isinstance(proposals, (list, tuple)) else type(proposals).__name__
        raise ValueError(f"Expected one Proposals per image ({len(images)}), got {got}.")
    for index, (item, image) in enumerate(zip(proposals, images)):
        if not isinstance(item, Proposals):
            raise ValueError(f"Proposals of image {index} must be a maft_hf.proposals.Proposals, got {type(item)}.")
        covered = tuple(item.image_size or item.masks.shape[-2:])
        if covered != (image.height, image.width):
            raise ValueError(
                f"Proposal masks of image {index} must cover the image's size (H, W) = ({image.height}, "
                f"{image.width}) (masks at that size, or Proposals.image_size equal to it), got {covered}."
            )
        validate_proposal_values(item.masks)
    return list(proposals)


def proposal_class_scores(
    logits: torch.Tensor,
    proposals: Proposals,
    class_names: Sequence[str],
    ensemble_weight: float | None,
    ensemble_formula: str = "paper",
    valid_size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """`(N, C)` scores `A` of one image: `softmax(logits)`, or the Eq. 9 ensemble when `ensemble_weight` is set and
    the proposals carry class scores (`empty`: no mask value inside `valid_size` above 0.5)."""
    probs = logits.float().softmax(dim=-1)
    if not ensemble_weight or proposals.class_scores is None:
        return probs
    generator_probs, seen = match_generator_scores(proposals.class_scores, proposals.class_names, class_names)
    masks = proposals.masks if valid_size is None else proposals.masks[:, : valid_size[0], : valid_size[1]]
    empty = ~(masks > 0.5).flatten(1).any(dim=1)
    return ensemble_class_scores(probs, generator_probs, seen, ensemble_weight, ensemble_formula, empty)


def _call(method, generator, images, class_names, text_classifier) -> list:
    """`method(images)`, with the vocabulary when the generator `needs_vocabulary` (e.g. FreeSeg)."""
    if getattr(generator, "needs_vocabulary", False):
        return method(images, class_names=list(class_names), text_classifier=text_classifier)
    return method(images)


def _generate(generator, images, class_names, text_classifier) -> list[Proposals]:
    """The generator's proposals per image; a plain callable may return masks in any user-mask format."""
    # One image per call: a batched generator may pad the images to one size, making maps depend on the batch size.
    items = []
    for image in images:
        out = _call(generator, generator, [image], class_names, text_classifier)
        item = out[0] if isinstance(out, (list, tuple)) and len(out) == 1 else out
        items.append(item if isinstance(item, Proposals) else _user_proposals(item, image))
    return check_proposals(items, images)


def _user_proposals(masks, image) -> Proposals:
    from ..proposals.user_masks import proposals_from_user_masks

    return proposals_from_user_masks(masks, image_size=(image.height, image.width))


def classify_and_map(model, pixel_values, items, text_classifier, names, frames, options) -> list[dict]:
    """Classify a batch's proposals in one forward pass and build each image's map. `frames[i] = (output_size,
    valid_size)`; `options`: `ensemble_weight` and `ensemble_formula`, the rest for [`semantic_map`]."""
    options = dict(options)
    weight, formula = options.pop("ensemble_weight"), options.pop("ensemble_formula")
    device = pixel_values.device
    grid_masks, valid = pad_proposals([patch_grid_masks(p.masks, model, pixel_values.shape[-1]) for p in items])
    with torch.no_grad():
        logits = classify_proposals(
            model, pixel_values, grid_masks.to(device), text_classifier.to(device), valid.to(device)
        )
    results = []
    for index, (item, (output_size, valid_size)) in enumerate(zip(items, frames)):
        scores = proposal_class_scores(logits[index, : item.num_proposals], item, names, weight, formula, valid_size)
        seg = semantic_map(
            scores, item.masks.to(device), False, output_size=output_size, valid_size=valid_size, **options
        )
        results.append({"segmentation": seg.cpu(), "class_names": list(names), "scores": scores.cpu()})
    return results


def _proposals_and_frames(generator, images, given, image_processor, inputs, names, text_classifier, preprocessing):
    """Each image's proposals and `(output_size, valid_size)`. Released mode: proposals on the padded canvas, from
    `propose_on_canvas` (FreeSeg, given the resized image) or resized bilinearly to the resized image, then
    zero-padded (or cropped) bottom/right."""
    sizes = [(image.height, image.width) for image in images]
    canvas_method = getattr(generator, "propose_on_canvas", None) if given is None else None
    items = given
    if items is None and (preprocessing != "released" or canvas_method is None):
        items = _generate(generator, images, names, text_classifier)
    if preprocessing != "released":
        return items, [(size, None) for size in sizes]
    resized_sizes = [tuple(size) for size in inputs["resized_sizes"].tolist()]
    results = []
    for index, image in enumerate(images):
        if canvas_method is not None:
            resized = image_to_tensor(image_processor.released_resize(image))
            (output,) = _call(canvas_method, generator, [resized], names, text_classifier)
            item = getattr(output, "proposals", output)  # FreeSeg's CanvasProposals or Proposals
            masks = item.masks
        else:
            item = items[index]
            masks = F.interpolate(item.masks[None].float(), resized_sizes[index], mode="bilinear", align_corners=False)
            masks = masks[0]
        height, width = inputs["canvas_sizes"][index].tolist()
        masks = masks[:, :height, :width]
        masks = F.pad(masks, (0, width - masks.shape[2], 0, height - masks.shape[1]))
        results.append(Proposals(masks=masks, class_scores=item.class_scores, class_names=item.class_names))
    return results, list(zip(sizes, resized_sizes))


def processor_text_classifier(model, processor, names, templates=None, cache=None) -> torch.Tensor:
    """The `(C, projection_dim)` text classifier of `names` with the tokenizer of a `MAFTProcessor`."""
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is None:
        raise ValueError("processor has no tokenizer: pass a MAFTProcessor or a precomputed text_classifier.")
    return build_text_classifier(model, tokenizer, names, templates=templates, cache=cache)


def _released_ensemble_check(generator, ensemble_formula: str) -> None:
    if ensemble_formula == "released" and getattr(generator, "renormalize_classes", False):
        raise ValueError(
            "ensemble_formula='released' needs the generator's class probabilities as the release computes them "
            "(softmax over K + 1 classes, void dropped afterwards); build the generator with "
            "renormalize_classes=False."
        )


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
    preprocessing: str = "direct",
    ensemble_formula: str = "paper",
    unlabeled_id: int | None = None,
    unlabeled_threshold: float = 0.5,
) -> list[dict]:
    """Open-vocabulary semantic segmentation of one or more images (docs/inference.md).

    `images`: a path, PIL image, array, tensor or a list of them (a `(B, 3, H, W)` tensor is a batch);
    `class_names`: a list of names (synonyms as `"building, edifice"`), a shipped vocabulary or a file; `processor`:
    a `MAFTProcessor` (an image processor suffices with `text_classifier`, a precomputed `(C, projection_dim)`);
    `proposal_generator`: a [`ProposalGenerator`] or a spec (`"grid:4"`, `"mask2former:<ckpt>"`,
    `"freeseg:<folder>"`), not needed with `proposals` (one per image); `ensemble_weight`: lambda of Eq. 9 when the
    proposals carry class scores (`None`/`0`: MAFT alone, as the released evaluation); `cache`: a
    [`TextClassifierCache`] or directory; `preprocessing`: `"direct"` (squeezed to the model input) or `"released"`
    (the authors' test-time path: short side 640, zero-pad to a multiple of 32; reproduces the paper);
    `ensemble_formula`: `"paper"` (Eq. 9 as printed) or `"released"`; `unlabeled_id`: the id of pixels no proposal
    covers (default: their argmax class).

    Returns one dict per image: `"segmentation"` (`(H, W)` int64 at the image's size), `"class_names"` and `"scores"`
    (`(N, C)` per-proposal class scores used for the map).
    """
    names = load_vocabulary(class_names)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    check_options(ensemble_weight, ensemble_formula, preprocessing, unlabeled_threshold)
    pil_images = load_images(images)
    generator = None if proposals is not None else resolve_proposal_generator(proposal_generator)
    _released_ensemble_check(generator, ensemble_formula)
    if proposals is not None:
        proposals = check_proposals(list(proposals), pil_images)
    device = model_device(model)
    image_processor = getattr(processor, "image_processor", None) or processor
    options = {"ensemble_weight": ensemble_weight, "ensemble_formula": ensemble_formula, "chunk_classes": chunk_classes}
    options.update(unlabeled_id=unlabeled_id, unlabeled_threshold=unlabeled_threshold)
    was_training = model.training
    model.eval()
    try:
        if text_classifier is None:
            text_classifier = processor_text_classifier(model, processor, names, templates, cache)
        if text_classifier.ndim != 2 or tuple(text_classifier.shape) != (len(names), model.config.projection_dim):
            raise ValueError(
                f"text_classifier must be (C={len(names)}, projection_dim={model.config.projection_dim}), got "
                f"{tuple(text_classifier.shape)}."
            )
        results = []
        for start in range(0, len(pil_images), batch_size):
            batch = pil_images[start : start + batch_size]
            given = proposals[start : start + batch_size] if proposals is not None else None
            inputs = image_processor(batch, preprocessing=preprocessing)
            items, frames = _proposals_and_frames(
                generator, batch, given, image_processor, inputs, names, text_classifier, preprocessing
            )
            pixel_values = inputs["pixel_values"].to(device)
            results.extend(classify_and_map(model, pixel_values, items, text_classifier, names, frames, options))
    finally:
        model.train(was_training)
    return results


class OpenVocabularySegmentationPipeline(pipeline_maft.OpenVocabularySegmentationPipeline):
    """Open-vocabulary semantic segmentation with MAFT: `pipe(image, candidate_labels=[...])`, registered as
    `"open-vocabulary-segmentation"` on `import maft_hf`; the pipeline that checkpoints carry, run by [`segment`].

    Proposals come from `proposal_generator` (at construction or per call) or `proposal_masks`; the other call
    arguments are those of [`segment`]. Returns a dict (`"segmentation"`, `"class_names"`, `"scores"`) per image.

    Example:

    ```python
    >>> from transformers import pipeline
    >>> import maft_hf
    >>> pipe = pipeline("open-vocabulary-segmentation", model="path/to/maft", proposal_generator="grid:4")
    >>> out = pipe("street.jpg", candidate_labels=["road", "car", "building, edifice"])
    >>> out["segmentation"].shape  # (H, W) of the image
    ```"""

    forward_options = {
        **pipeline_maft.OpenVocabularySegmentationPipeline.forward_options,
        "ensemble_formula": str,
        "unlabeled_id": int,
        "unlabeled_threshold": float,
    }

    def __init__(self, *args, text_classifier_cache: TextClassifierCache | None = None, **kwargs):
        self.text_classifier_cache = TextClassifierCache() if text_classifier_cache is None else text_classifier_cache
        super().__init__(*args, **kwargs)

    def vocabulary(self, candidate_labels) -> list[str]:
        return load_vocabulary(candidate_labels)

    def resolve_generator(self, generator):
        return resolve_proposal_generator(generator)

    def text_classifier(self, names, templates) -> torch.Tensor:
        cache = self.text_classifier_cache
        return build_text_classifier(self.model, self.tokenizer, names, templates, cache=cache, device=self.device)

    def __call__(self, images, candidate_labels=None, batch_size=None, **kwargs):
        batch_size = batch_size or self._batch_size or 1
        if batch_size == 1 or not isinstance(images, (list, tuple)) or not images or candidate_labels is None:
            return super().__call__(images, candidate_labels, **kwargs)  # checks the arguments; one image at a time
        preprocess, forward, _ = self._sanitize_parameters(candidate_labels=candidate_labels, **kwargs)
        inputs = self.preprocess(images, **{**self._preprocess_params, **preprocess})
        return self._forward(inputs, batch_size=int(batch_size), **{**self._forward_params, **forward})

    def _sanitize_parameters(self, preprocessing=None, **kwargs):
        # Only what this call sets: options given to pipeline() must survive calls that do not repeat them.
        threshold = 0.5 if kwargs.get("unlabeled_threshold") is None else kwargs["unlabeled_threshold"]
        formula = kwargs.get("ensemble_formula") or "paper"
        check_options(kwargs.get("ensemble_weight"), formula, preprocessing or "direct", threshold)
        preprocess, forward, postprocess = super()._sanitize_parameters(**kwargs)
        if preprocessing is not None:
            preprocess["preprocessing"] = preprocessing
        return preprocess, forward, postprocess

    def preprocess(self, images, proposal_masks=None, **preprocess):
        pictures = load_images(images)
        proposals = None if proposal_masks is None else [_user_proposals(proposal_masks, p) for p in pictures]
        return {"pictures": pictures, "proposals": proposals, **preprocess}

    def _forward(self, inputs, candidate_labels, templates=None, batch_size: int = 1, **options):
        text_classifier = self.text_classifier(candidate_labels, templates)
        options.update(proposals=inputs["proposals"], text_classifier=text_classifier, batch_size=batch_size)
        options["preprocessing"] = inputs.get("preprocessing", "direct")
        generator = inputs.get("proposal_generator")
        return segment(inputs["pictures"], candidate_labels, self.model, self.image_processor, generator, **options)

    def postprocess(self, outputs):
        (result,) = outputs
        return result


def register_pipeline() -> None:
    """Register [`OpenVocabularySegmentationPipeline`] as `"open-vocabulary-segmentation"` (idempotent)."""
    from transformers.pipelines import PIPELINE_REGISTRY

    current = PIPELINE_REGISTRY.supported_tasks.get(TASK_NAME)
    if current is not None and current.get("impl") is OpenVocabularySegmentationPipeline:
        return
    PIPELINE_REGISTRY.register_pipeline(
        TASK_NAME, pipeline_class=OpenVocabularySegmentationPipeline, pt_model=MaskAwareCLIPModel, type="multimodal"
    )
