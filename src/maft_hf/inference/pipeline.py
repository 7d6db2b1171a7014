"""Segment any image with any vocabulary: a function API and a transformers pipeline.

Both run the same steps (docs/inference.md): load the image ([`~maft_hf.model.images.load_images`]); pre-process it
(`"direct"` or `"released"`); proposals from a [`~maft_hf.proposals.ProposalGenerator`] (with the vocabulary when it
needs one; on the padded canvas in released mode); the cached text classifier; MAFT's class logits of every proposal,
the masks reaching the model already reduced to its patch grid by its own rule (so images of different sizes share
one forward pass); per-proposal scores, optionally ensembled with the generator's (paper Eq. 9); the semantic map
at the image's size in bounded memory ([`~maft_hf.inference.semantic_map.semantic_map`]).

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
import torch.nn.functional as F
from transformers import Pipeline

from ..model.images import image_to_tensor, load_images
from ..model.modeling_maft import (
    MaskAwareCLIPModel,
    pad_proposals,
    proposals_to_patch_visibility,
    validate_proposal_values,
)
from ..model.processing_maft import PREPROCESSING_MODES
from ..proposals import ProposalGenerator, Proposals
from .semantic_map import (
    DEFAULT_ENSEMBLE_WEIGHT,
    ENSEMBLE_FORMULAS,
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


def check_options(ensemble_weight, ensemble_formula: str, preprocessing: str, unlabeled_threshold: float) -> None:
    """Validate the inference options once, where they enter (`segment`, the pipeline)."""
    if ensemble_weight is not None and not 0.0 <= float(ensemble_weight) <= 1.0:
        raise ValueError(f"ensemble_weight must be in [0, 1] (or None), got {ensemble_weight}.")
    if ensemble_formula not in ENSEMBLE_FORMULAS:
        raise ValueError(f"ensemble_formula must be one of {ENSEMBLE_FORMULAS}, got {ensemble_formula!r}.")
    if preprocessing not in PREPROCESSING_MODES:
        raise ValueError(f"preprocessing must be one of {PREPROCESSING_MODES}, got {preprocessing!r}.")
    if not float(unlabeled_threshold) >= 0.0:
        raise ValueError(f"unlabeled_threshold must be >= 0, got {unlabeled_threshold}.")


def check_proposals(proposals, images) -> list[Proposals]:
    """Check one [`Proposals`] per image, covering that image (masks at its size, or `image_size` equal to it), with
    probabilities in [0, 1]."""
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
    logits: torch.Tensor,
    proposals: Proposals,
    class_names: Sequence[str],
    ensemble_weight: float | None,
    ensemble_formula: str = "paper",
) -> torch.Tensor:
    """`(N, C)` scores `A` of one image: `softmax(logits)`, or the Eq. 9 ensemble with the generator's scores
    ([`ensemble_class_scores`]; vocabulary classes matched to the generator's by name, [`match_generator_scores`]).

    The ensemble applies only when `ensemble_weight` is neither None nor 0 and the proposals carry class scores. For
    the released formula a proposal is empty when none of its mask values (as given to the model) exceeds 0.5.
    """
    probs = logits.float().softmax(dim=-1)
    if not ensemble_weight or proposals.class_scores is None:
        return probs
    generator_probs, seen = match_generator_scores(proposals.class_scores, proposals.class_names, class_names)
    empty = ~(proposals.masks > 0.5).flatten(1).any(dim=1)
    return ensemble_class_scores(probs, generator_probs, seen, ensemble_weight, ensemble_formula, empty)


def _call(method, generator, images, class_names, text_classifier) -> list:
    """`method(images)`, with the vocabulary when the generator needs one (`needs_vocabulary`, e.g. FreeSeg)."""
    if getattr(generator, "needs_vocabulary", False):
        return method(images, class_names=list(class_names), text_classifier=text_classifier)
    return method(images)


def _generate(generator, images, class_names, text_classifier) -> list[Proposals]:
    """The generator's proposals per image; a plain callable may return masks in any user-mask format."""
    from ..proposals.user_masks import proposals_from_user_masks

    items = _call(generator, generator, images, class_names, text_classifier)
    if isinstance(items, (list, tuple)) and len(items) == len(images):
        items = [
            item if isinstance(item, Proposals) else proposals_from_user_masks(item, image_size=(im.height, im.width))
            for item, im in zip(items, images)
        ]
    return check_proposals(items, images)


def _fit_canvas(masks: torch.Tensor, canvas: tuple[int, int]) -> torch.Tensor:
    """Zero-pad (or crop) `(N, h, w)` masks bottom/right to the canvas size."""
    masks = masks[:, : canvas[0], : canvas[1]]
    return F.pad(masks, (0, canvas[1] - masks.shape[2], 0, canvas[0] - masks.shape[1]))


def released_proposals(generator, images, given, image_processor, inputs, class_names, text_classifier):
    """Proposals on the released path's padded canvas, one per image.

    A generator with `propose_on_canvas` (FreeSeg) gets the image resized as the processor resized it and returns
    masks on the canvas; otherwise the proposals at the image size (or at a working resolution) are resized
    bilinearly (`align_corners=False`) to the resized image and zero-padded bottom/right to the canvas.
    """
    canvas_method = getattr(generator, "propose_on_canvas", None) if given is None else None
    resized_sizes, canvas_sizes = inputs["resized_sizes"].tolist(), inputs["canvas_sizes"].tolist()
    if canvas_method is None:
        items = given if given is not None else _generate(generator, images, class_names, text_classifier)
    results = []
    for index, image in enumerate(images):
        canvas = tuple(canvas_sizes[index])
        if canvas_method is not None:
            resized = image_to_tensor(image_processor.released_resize(image))
            (output,) = _call(canvas_method, generator, [resized], class_names, text_classifier)
            item = getattr(output, "proposals", output)  # FreeSeg's CanvasProposals or Proposals
            masks = _fit_canvas(item.masks, canvas)
        else:
            item = items[index]
            masks = F.interpolate(
                item.masks[None].float(), size=tuple(resized_sizes[index]), mode="bilinear", align_corners=False
            )[0]
            masks = _fit_canvas(masks, canvas)
        results.append(Proposals(masks=masks, class_scores=item.class_scores, class_names=item.class_names))
    return results


def classify_and_map(model, pixel_values, items, text_classifier, names, frames, options) -> list[dict]:
    """Classify the proposals of a batch in one forward pass and build each image's semantic map.

    `frames[i] = (output_size, valid_size)`: the image's size and the masks' region that covers it (None: all).
    `options`: `ensemble_weight` and `ensemble_formula` for the scores, the rest for [`semantic_map`].
    """
    options = dict(options)
    weight, formula = options.pop("ensemble_weight"), options.pop("ensemble_formula")
    device = pixel_values.device
    grid_masks, valid = pad_proposals([patch_grid_masks(p.masks, model, pixel_values.shape[-1]) for p in items])
    with torch.no_grad():
        logits = classify_proposals(
            model, pixel_values, grid_masks.to(device), text_classifier.to(device), valid.to(device)
        )
    results = []
    for index, item in enumerate(items):
        scores = proposal_class_scores(logits[index, : item.num_proposals], item, names, weight, formula)
        output_size, valid_size = frames[index]
        seg = semantic_map(
            scores, item.masks.to(device), False, output_size=output_size, valid_size=valid_size, **options
        )
        results.append({"segmentation": seg.cpu(), "class_names": list(names), "scores": scores.cpu()})
    return results


def _image_processor(processor):
    return getattr(processor, "image_processor", None) or processor


def _model_device(model) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _proposals_and_frames(generator, images, given, image_processor, inputs, names, text_classifier, preprocessing):
    """The proposals of a batch in the model's frame, and each image's `(output_size, valid_size)`."""
    if preprocessing == "released":
        items = released_proposals(generator, images, given, image_processor, inputs, names, text_classifier)
        valid = [tuple(size) for size in inputs["resized_sizes"].tolist()]
    else:
        items = given if given is not None else _generate(generator, images, names, text_classifier)
        valid = [None] * len(images)
    return items, [((image.height, image.width), size) for image, size in zip(images, valid)]


def _released_ensemble_check(generator, ensemble_formula: str) -> None:
    if ensemble_formula == "released" and getattr(generator, "renormalize_classes", False):
        raise ValueError(
            "ensemble_formula='released' needs the generator's class probabilities as the release computes them "
            "(softmax over K + 1 classes, void dropped afterwards); build the generator with "
            "renormalize_classes=False."
        )


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
    preprocessing: str = "direct",
    ensemble_formula: str = "paper",
    unlabeled_id: int | None = None,
    unlabeled_threshold: float = 0.5,
) -> list[dict]:
    """Open-vocabulary semantic segmentation of one or more images (docs/inference.md).

    Args:
        images: a path, PIL image, array, tensor, or a list of them (a `(B, 3, H, W)` tensor is a batch); loaded by
            [`~maft_hf.model.images.load_images`] (RGB, 8 bits, EXIF orientation applied).
        class_names: the vocabulary: a list of names (synonyms as `"building, edifice"`), a shipped vocabulary name
            (e.g. `"ade20k_150"`) or a file ([`~maft_hf.inference.vocabulary.load_vocabulary`]).
        model: a `MaskAwareCLIPModel` (eval mode is used; its training flag is restored).
        processor: a `MAFTProcessor` (image processor + tokenizer), or a `MAFTImageProcessor` when
            `text_classifier` is given.
        proposal_generator: a [`ProposalGenerator`] or a spec string (`"grid:4"`, `"mask2former:<ckpt>"`,
            `"freeseg:<folder>"`). Generators with `needs_vocabulary` get `class_names` and the text classifier.
            Not needed when `proposals` is given.
        ensemble_weight: the weight of Eq. 9 for the ensemble with the generator's own class scores (default 0.7).
            It applies only when the proposals carry class scores; `None` or `0` uses MAFT's scores alone, as the
            released evaluation does.
        proposals: precomputed [`Proposals`], one per image, instead of calling the generator.
        templates: prompt templates (default: the 14 of the released code).
        text_classifier: a precomputed `(C, projection_dim)` classifier for `class_names`, skips the text tower.
        cache: text-classifier cache ([`TextClassifierCache`] or a directory).
        batch_size: images per forward pass of the image encoder.
        chunk_classes: class chunk of [`semantic_map`] (default: all classes).
        preprocessing: `"direct"` (the whole image squeezed to the model input; any size) or `"released"` (the
            authors' test-time path: ResizeShortestEdge 640 / max 2560, zero-pad to a multiple of 32, proposals and
            scores on the padded canvas, the score map cropped and resized to the image; reproduces the paper).
        ensemble_formula: `"paper"` (Eq. 9 as printed: `lambda` on the generator for seen classes) or `"released"`
            (the authors' code: `A_p^(1-w) A_c^w` for every class, `A_c = 1` for empty proposals).
        unlabeled_id: when set, pixels whose total proposal weight is below `unlabeled_threshold` (no proposal covers
            them) get this id; default None gives every pixel its argmax class (uncovered pixels get class 0).
        unlabeled_threshold: see `unlabeled_id`.

    Returns:
        One dict per image, in order:
            - `"segmentation"`: `(H, W)` `torch.LongTensor` of class ids in `[0, C)` (or `unlabeled_id`) at the
              image's size;
            - `"class_names"`: the `C` names, id `i` = `class_names[i]`;
            - `"scores"`: `(N, C)` float tensor, the per-proposal class scores used for the map.
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
    device = _model_device(model)
    image_processor = _image_processor(processor)
    options = {
        "ensemble_weight": ensemble_weight,
        "ensemble_formula": ensemble_formula,
        "chunk_classes": chunk_classes,
        "unlabeled_id": unlabeled_id,
        "unlabeled_threshold": unlabeled_threshold,
    }
    was_training = model.training
    model.eval()
    try:
        if text_classifier is None:
            tokenizer = getattr(processor, "tokenizer", None)
            if tokenizer is None:
                raise ValueError("processor has no tokenizer: pass a MAFTProcessor or a precomputed text_classifier.")
            text_classifier = build_text_classifier(model, tokenizer, names, templates=templates, cache=cache)
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


# ---------------------------------------------------------------------------------------------------------------
# transformers pipeline
# ---------------------------------------------------------------------------------------------------------------
class OpenVocabularySegmentationPipeline(Pipeline):
    r"""
    Open-vocabulary semantic segmentation with MAFT: `pipe(image, candidate_labels=[...])`.

    Registered as `"open-vocabulary-segmentation"` by [`register_pipeline`] (called on `import maft_hf`).
    The image processor and tokenizer are loaded from the checkpoint; proposals come from `proposal_generator`
    (given at construction or per call). `batch_size > 1` runs that many images per forward pass through
    [`segment`] (the same maps as one at a time). Checkpoints also carry a self-contained copy of this pipeline
    (`maft_hf.model.pipeline_maft`) that loads with `trust_remote_code=True` where the package is not installed.

    Call arguments:
        images: one image or a list (paths, PIL, numpy arrays, tensors); converted to RGB.
        candidate_labels: the vocabulary (list of names, shipped vocabulary name or file). Required.
        proposal_generator: a [`ProposalGenerator`] or spec string (`"grid:4"`), overriding the constructor's.
        proposal_masks: user masks for this image instead of a generator (any format of
            `maft_hf.proposals.proposals_from_user_masks`).
        ensemble_weight: the weight of Eq. 9 (default 0.7 when the proposals carry class scores; 0: no ensemble).
        templates: prompt templates (default: the 14 of the released code).
        preprocessing, ensemble_formula, unlabeled_id, unlabeled_threshold, chunk_classes: as for [`segment`]
            (e.g. `pipe(image, candidate_labels=names, preprocessing="released")`).

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

    def __call__(self, images, candidate_labels=None, **kwargs):
        if candidate_labels is None:
            raise ValueError("candidate_labels is required: the class names to segment.")
        if isinstance(images, (list, tuple)) and len(images) == 0:
            raise ValueError("No images were given; expected at least one image.")
        if isinstance(images, tuple):
            images = list(images)
        batch_size = kwargs.pop("batch_size", None) or self._batch_size or 1
        if batch_size > 1 and isinstance(images, list):
            return self._segment_batched(images, candidate_labels, int(batch_size), kwargs)
        return super().__call__(images, candidate_labels=candidate_labels, **kwargs)

    def _segment_batched(self, images, candidate_labels, batch_size: int, kwargs) -> list[dict]:
        """`batch_size` images per forward pass through [`segment`] (the same maps as one image at a time)."""
        preprocess, forward, _ = self._sanitize_parameters(candidate_labels=candidate_labels, **kwargs)
        preprocess, forward = {**self._preprocess_params, **preprocess}, {**self._forward_params, **forward}
        names = preprocess["candidate_labels"]
        pictures = load_images(images)
        proposals = None
        if preprocess.get("proposal_masks") is not None:
            from ..proposals.user_masks import proposals_from_user_masks

            masks = preprocess["proposal_masks"]
            proposals = [proposals_from_user_masks(masks, image_size=(p.height, p.width)) for p in pictures]
        text_classifier = build_text_classifier(
            self.model,
            self.tokenizer,
            names,
            templates=forward.get("templates"),
            cache=self.text_classifier_cache,
            device=self.device,
        )
        options = {k: v for k, v in forward.items() if k != "templates"}
        results = segment(
            pictures,
            names,
            self.model,
            self.image_processor,
            None if proposals is not None else preprocess.get("proposal_generator"),
            proposals=proposals,
            text_classifier=text_classifier,
            batch_size=batch_size,
            preprocessing=preprocess["preprocessing"],
            **options,
        )
        return [self.postprocess(result) for result in results]

    def _sanitize_parameters(
        self,
        candidate_labels=None,
        proposal_generator=None,
        proposal_masks=None,
        ensemble_weight=None,
        templates=None,
        chunk_classes=None,
        preprocessing=None,
        ensemble_formula=None,
        unlabeled_id=None,
        unlabeled_threshold=None,
        **unused,
    ):
        if unused:
            raise ValueError(f"Unknown arguments for {type(self).__name__}: {sorted(unused)}.")
        preprocess = {"preprocessing": preprocessing or "direct"}
        forward = {"ensemble_formula": ensemble_formula or "paper", "unlabeled_id": unlabeled_id}
        forward["unlabeled_threshold"] = 0.5 if unlabeled_threshold is None else float(unlabeled_threshold)
        check_options(
            ensemble_weight, forward["ensemble_formula"], preprocess["preprocessing"], forward["unlabeled_threshold"]
        )
        if candidate_labels is not None:
            preprocess["candidate_labels"] = load_vocabulary(candidate_labels)
        if proposal_generator is not None:
            preprocess["proposal_generator"] = resolve_proposal_generator(proposal_generator)
            _released_ensemble_check(preprocess["proposal_generator"], forward["ensemble_formula"])
        if proposal_masks is not None:
            preprocess["proposal_masks"] = proposal_masks
        if ensemble_weight is not None:
            forward["ensemble_weight"] = float(ensemble_weight)
        if templates is not None:
            forward["templates"] = list(templates)
        if chunk_classes is not None:
            forward["chunk_classes"] = int(chunk_classes)
        return preprocess, forward, {}

    def preprocess(
        self, image, candidate_labels=None, proposal_generator=None, proposal_masks=None, preprocessing="direct"
    ):
        if candidate_labels is None:
            raise ValueError("candidate_labels is required: the class names to segment.")
        (picture,) = load_images(image)
        given = None
        if proposal_masks is not None:
            from ..proposals.user_masks import proposals_from_user_masks

            given = [proposals_from_user_masks(proposal_masks, image_size=(picture.height, picture.width))]
        generator = None if given is not None else resolve_proposal_generator(proposal_generator)
        return {
            "inputs": self.image_processor([picture], preprocessing=preprocessing),
            "image": picture,
            "given": given,
            "generator": generator,
            "preprocessing": preprocessing,
            "candidate_labels": candidate_labels,
        }

    def _forward(self, model_inputs, ensemble_weight=DEFAULT_ENSEMBLE_WEIGHT, templates=None, **options):
        names = model_inputs["candidate_labels"]
        text_classifier = build_text_classifier(
            self.model, self.tokenizer, names, templates=templates, cache=self.text_classifier_cache, device=self.device
        )
        inputs = model_inputs["inputs"]
        items, frames = _proposals_and_frames(
            model_inputs["generator"],
            [model_inputs["image"]],
            model_inputs["given"],
            self.image_processor,
            inputs,
            names,
            text_classifier,
            model_inputs["preprocessing"],
        )
        options = {"ensemble_weight": ensemble_weight, "chunk_classes": None, **options}
        (result,) = classify_and_map(self.model, inputs["pixel_values"], items, text_classifier, names, frames, options)
        return result

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
