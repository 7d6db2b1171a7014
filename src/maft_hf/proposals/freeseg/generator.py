"""`FreeSegProposals`: the released MAFT models' own proposal source (spec `"freeseg:<folder>"`), with the release's
test-time input path (resize, normalise, pad to 32, forward, masks back to the image; `docs/freeseg.md`).

FreeSeg's masks depend on the vocabulary (`needs_vocabulary = True`): pass `class_names` and `text_classifier (K, D)`
(MAFT's text classifier, `build_text_classifier`), or set a text encoder and pass only the names.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ...data.transforms import resize_image, shortest_edge_size
from ...model.images import image_to_tensor, load_images
from .. import ProposalGenerator, Proposals, mask_size_for
from .._images import normalize_and_pad
from .configuration_freeseg import FreeSegConfig
from .modeling_freeseg import FreeSegModel

_UPSAMPLE_CHUNK = 25  # queries upsampled to the padded input size at once (bounds memory)


class CanvasProposals(NamedTuple):
    """[`FreeSegProposals.propose_on_canvas`] output: `proposals.masks (Q, Hp, Wp)` on the zero-padded canvas and
    `valid_size (H', W')`, the image region (top-left) of the canvas."""

    proposals: Proposals
    valid_size: tuple[int, int]


def load_freeseg_model(model_or_path, local_files_only: bool | None = None) -> FreeSegModel:
    """`FreeSegModel.from_pretrained(path)` for a converted folder (or Hub id); a model instance is returned as is."""
    if isinstance(model_or_path, FreeSegModel):
        return model_or_path
    if isinstance(model_or_path, (str, os.PathLike)):
        from ...hub.conversion import pretrained_options

        return FreeSegModel.from_pretrained(os.fspath(model_or_path), **pretrained_options(local_files_only))
    raise ValueError(f"Expected a FreeSeg folder / Hub id or a FreeSegModel, got {type(model_or_path).__name__}.")


def mask_probabilities(mask_logits, padded_size, valid_size=None, output_size=None) -> torch.Tensor:
    """`(Q, h, w)` mask logits -> probabilities: bilinear upsampling to the `(Hp, Wp)` padded size with
    `align_corners=True` and sigmoid (MAFT's `mask_results`); with `valid_size` and `output_size` also cropped to the
    image region and resized bilinearly to `output_size` (detectron2's `sem_seg_postprocess`)."""
    chunks = []
    for start in range(0, mask_logits.shape[0], _UPSAMPLE_CHUNK):
        logits = mask_logits[None, start : start + _UPSAMPLE_CHUNK].float()
        probs = F.interpolate(logits, size=tuple(padded_size), mode="bilinear", align_corners=True).sigmoid()
        if valid_size is not None:
            probs = probs[:, :, : valid_size[0], : valid_size[1]]
            if tuple(probs.shape[-2:]) != tuple(output_size):
                probs = F.interpolate(probs, size=tuple(output_size), mode="bilinear", align_corners=False)
        chunks.append(probs[0])
    return torch.cat(chunks)


class FreeSegProposals(ProposalGenerator):
    """Proposals (and class scores over the vocabulary) from the released FreeSeg generator: `model_or_path` is a
    converted folder, Hub id or [`FreeSegModel`]; `text_encoder` / `tokenizer` / `templates` embed class names when a
    call passes no `text_classifier`."""

    needs_vocabulary = True

    def __init__(
        self,
        model_or_path,
        device=None,
        *,
        text_encoder=None,
        tokenizer=None,
        templates: Sequence[str] | None = None,
        local_files_only: bool | None = None,
    ):
        self.model = load_freeseg_model(model_or_path, local_files_only).eval()
        if device is not None:
            self.model.to(device)
        self.text_encoder = self.tokenizer = self.templates = None
        self._text_cache: dict[tuple[str, ...], torch.Tensor] = {}
        if text_encoder is not None or tokenizer is not None:
            self.set_text_encoder(text_encoder, tokenizer, templates)

    @property
    def config(self) -> FreeSegConfig:
        return self.model.config

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def set_text_encoder(self, text_encoder, tokenizer, templates: Sequence[str] | None = None) -> None:
        """Embed class names with this CLIP text tower and tokenizer when a call passes no `text_classifier`."""
        if text_encoder is None or tokenizer is None:
            raise ValueError("set_text_encoder needs both a text encoder (e.g. the MAFT/CLIP model) and its tokenizer.")
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.templates = None if templates is None else list(templates)
        self._text_cache.clear()

    def _vocabulary(self, class_names, text_classifier) -> tuple[list[str], torch.Tensor]:
        """`(class names, (K + 1, D) text features)` for a call."""
        if text_classifier is None:
            if class_names is None:
                raise ValueError(
                    "FreeSeg needs the vocabulary (its masks depend on it): pass class_names=[...] with "
                    "text_classifier=<(K, D) MAFT text classifier>, or set_text_encoder(clip_model, tokenizer) first."
                )
            if self.text_encoder is None:
                raise ValueError(
                    "FreeSeg got class_names but no text_classifier and has no text encoder: pass text_classifier="
                    "build_text_classifier(model, tokenizer, class_names) or call set_text_encoder(model, tokenizer)."
                )
            key = tuple(str(name) for name in class_names)
            if key not in self._text_cache:
                from ...inference.text_classifier import build_text_classifier

                self._text_cache[key] = build_text_classifier(
                    self.text_encoder, self.tokenizer, list(key), templates=self.templates
                )
            text_classifier = self._text_cache[key]
        with torch.no_grad():
            text_features = self.model.text_features_with_void(text_classifier)  # validates its shape
        if class_names is None:
            class_names = [f"class_{index}" for index in range(len(text_classifier))]
        if len(class_names) != len(text_classifier):
            raise ValueError(f"{len(class_names)} class names for a text_classifier of {len(text_classifier)} rows.")
        return [str(name) for name in class_names], text_features

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """The test-time `ResizeShortestEdge` output size of an image."""
        return shortest_edge_size(height, width, self.config.test_short_side, self.config.test_max_size)

    @torch.no_grad()
    def _forward(self, images: list[torch.Tensor], text_features: torch.Tensor):
        """Normalise, zero-pad the batch to a multiple of `size_divisibility`, run the model."""
        config = self.config
        images = [image.to(self.device) for image in images]
        pixel_values, _ = normalize_and_pad(images, config.pixel_mean, config.pixel_std, 1.0, config.size_divisibility)
        outputs = self.model(pixel_values.to(next(self.model.parameters()).dtype), text_features)
        return outputs.mask_logits, outputs.class_logits.float().softmax(-1)[..., :-1], tuple(pixel_values.shape[-2:])

    def __call__(self, images, class_names: Sequence[str] | None = None, text_classifier=None) -> list[Proposals]:
        """One [`Proposals`] per image at its original resolution, as the release computes them: `masks (Q, H, W)`,
        `class_scores (Q, K)`. Each image runs alone (batch 1, as the release evaluates)."""
        names, text_features = self._vocabulary(class_names, text_classifier)
        results = []
        for image in load_images(images):
            image = image_to_tensor(image)
            output_size = tuple(image.shape[-2:])
            resized = resize_image(image, self.resized_size(*output_size))
            mask_logits, scores, padded = self._forward([resized], text_features)
            target = mask_size_for(output_size, tuple(resized.shape[-2:]))  # the working size for huge images
            masks = mask_probabilities(mask_logits[0], padded, tuple(resized.shape[-2:]), target)
            image_size = output_size if target != output_size else None
            results.append(
                Proposals(masks=masks, class_scores=scores[0], class_names=list(names), image_size=image_size)
            )
        return results

    def propose_on_canvas(
        self, images, class_names: Sequence[str] | None = None, text_classifier=None
    ) -> list[CanvasProposals]:
        """One [`CanvasProposals`] per image already at the working scale: the images are zero-padded together to a
        multiple of `size_divisibility` (detectron2's `ImageList`) and run in one pass; masks are MAFT's
        `mask_results` on that canvas (upsampled with `align_corners=True`, sigmoid, no crop, no resize)."""
        names, text_features = self._vocabulary(class_names, text_classifier)
        images = [image_to_tensor(image) for image in load_images(images)]
        mask_logits, scores, padded = self._forward(images, text_features)
        results = []
        for logits, image_scores, image in zip(mask_logits, scores, images):
            masks = mask_probabilities(logits, padded)
            proposals = Proposals(masks=masks, class_scores=image_scores, class_names=list(names))
            results.append(CanvasProposals(proposals, tuple(image.shape[-2:])))
        return results
