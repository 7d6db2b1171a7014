"""Gradio demo (a Hugging Face Space) of MAFT open-vocabulary segmentation: upload an image, type class names, pick
a proposal source, get an overlay with a legend and the share of the image each class covers.

    python space/app.py                      # tiny random model, built offline at start-up (demonstration only)
    MAFT_MODEL=<hub id or folder> python space/app.py

Environment variables:

- `MAFT_MODEL`: a MAFT checkpoint (Hub id or local folder). Without it a tiny *random* model is built into a temporary
  folder: the app runs offline, but its labels mean nothing.
- `MAFT_PROPOSALS`: comma-separated proposal specs offered in the dropdown (default `kmeans:8, grid:4`); the first one
  is the default.
- `MAFT_ALLOW_CUSTOM_PROPOSALS`: `0` refuses specs other than those listed; by default (`1`) any typed spec is
  accepted, such as `mask2former:<checkpoint>`, which downloads and loads that checkpoint.

Gradio analytics and version checks are switched off; with the default model nothing reaches the network.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image

from maft_hf import (
    MAFTProcessor,
    MaskAwareCLIPModel,
    TextClassifierCache,
    build_text_classifier,
    class_areas,
    load_image,
    overlay,
    segment,
)
from maft_hf.proposals import load_proposal_generator

# Gradio reads this when apps are built, not on import: no telemetry and no version check (each Blocks also gets
# analytics_enabled=False).
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
logger = logging.getLogger("maft_hf.space")

DEFAULT_CLASSES = "sky, grass, road, wall, tree, person, car"
DEFAULT_PROPOSALS = ("kmeans:8", "grid:4")
MAX_CLASSES = 100
MAX_IMAGE_SIDE = 1024  # larger uploads are downscaled: proposals and maps are computed at the image's size
MAX_PROPOSAL_GENERATORS = 4  # loaded proposal sources kept in memory
AREA_COLUMNS = ["class", "area (%)", "pixels"]
TINY_MODEL_NOTE = (
    "**Note:** no `MAFT_MODEL` is set, so this demo runs a **tiny random MAFT model** built at start-up. "
    "It shows how the app works; its labels are arbitrary and for demonstration only. Set `MAFT_MODEL` to a MAFT "
    "checkpoint (Hub id or folder) for real segmentations."
)
DESCRIPTION = (
    "# MAFT open-vocabulary segmentation\n"
    "Upload an image, type the class names to look for (comma-separated), choose where the class-agnostic mask "
    "proposals come from, and press **Segment**. MAFT's mask-aware CLIP names every proposal with one of your "
    "classes. `kmeans:<k>` (colour clusters) and `grid:<k>` (k x k blocks) need no weights; "
    "`mask2former:<checkpoint>` or `sam:<checkpoint>` use a proposal network."
)


def parse_class_names(text: str | None) -> list[str]:
    """Class names typed in the UI: separated by commas or new lines; blank entries (`"sky, ,grass,"`) are skipped.

    Raises `ValueError` for an empty vocabulary, duplicates (case-insensitive, as CLIP lower-cases) and more than
    `MAX_CLASSES` names. The text is never read as a vocabulary name or a file.
    """
    names = [part.strip() for part in (text or "").replace("\n", ",").split(",")]
    names = [name for name in names if name]
    if not names:
        raise ValueError("Type at least one class name (comma-separated, e.g. 'sky, grass, car').")
    seen: dict[str, str] = {}
    duplicates = []
    for name in names:
        if name.lower() in seen and seen[name.lower()] not in duplicates:
            duplicates.append(seen[name.lower()])
        seen.setdefault(name.lower(), name)
    if duplicates:
        raise ValueError(f"Duplicate class names: {', '.join(duplicates)}. Give every class once.")
    if len(names) > MAX_CLASSES:
        raise ValueError(f"At most {MAX_CLASSES} class names, got {len(names)}.")
    return names


def area_table(seg_map, class_names) -> pd.DataFrame:
    """Every class of the vocabulary with its share of the image (percent of pixels), largest first."""
    rows = [
        [entry["name"], round(100.0 * entry["fraction"], 2), entry["pixels"]]
        for entry in class_areas(seg_map, class_names, include_empty=True)
    ]
    return pd.DataFrame(rows, columns=AREA_COLUMNS)


class Segmenter:
    """The model, processor, text-classifier cache and proposal sources, loaded once and shared by all requests.

    Args:
        model_path: MAFT checkpoint (Hub id or folder); `None` builds the tiny random checkpoint into a temporary
            folder (offline, demonstration only).
        max_image_side: uploads with a longer side are downscaled to it.
        allow_custom_proposals: accept proposal specs other than `proposal_choices`.
    """

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        *,
        proposal_choices=DEFAULT_PROPOSALS,
        allow_custom_proposals: bool = True,
        max_image_side: int = MAX_IMAGE_SIDE,
        warm_up_classes: str | None = DEFAULT_CLASSES,
    ):
        self.is_tiny_random = model_path is None
        if model_path is None:
            from maft_hf.testing import build_tiny_checkpoint

            self._tmp = tempfile.TemporaryDirectory(prefix="maft_space_")
            # Vision weights drawn wide: the default init labels every proposal alike, so the overlay would show a
            # single class. Seed and spread are picked so that the bundled scene gets several (arbitrary) classes.
            model_path = build_tiny_checkpoint(Path(self._tmp.name) / "tiny-maft", seed=2, initializer_range=0.5)
        self.model_path = os.fspath(model_path)
        self.model = MaskAwareCLIPModel.from_pretrained(self.model_path).eval()
        self.processor = MAFTProcessor.from_pretrained(self.model_path)
        self.text_cache = TextClassifierCache(max_entries=32)
        self.proposal_choices = list(proposal_choices)
        self.allow_custom_proposals = allow_custom_proposals
        self.max_image_side = max_image_side
        self._generators: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()
        for spec in self.proposal_choices[:1]:
            self.proposal_generator(spec)
        if warm_up_classes:  # the default vocabulary's text classifier is ready before the first request
            build_text_classifier(
                self.model, self.processor.tokenizer, parse_class_names(warm_up_classes), cache=self.text_cache
            )

    def proposal_generator(self, spec: str):
        spec = (spec or "").strip()
        if not spec:
            raise ValueError(f"Choose a proposal source, e.g. {self.proposal_choices[0]!r}.")
        if spec not in self.proposal_choices and not self.allow_custom_proposals:
            raise ValueError(f"Unknown proposal source {spec!r}; choose one of {', '.join(self.proposal_choices)}.")
        if spec not in self._generators:
            self._generators[spec] = load_proposal_generator(spec)
            while len(self._generators) > MAX_PROPOSAL_GENERATORS:
                self._generators.popitem(last=False)
        self._generators.move_to_end(spec)
        return self._generators[spec]

    def prepare_image(self, image) -> Image.Image:
        if image is None:
            raise ValueError("Upload an image first.")
        picture = load_image(image)
        if max(picture.size) > self.max_image_side:
            scale = self.max_image_side / max(picture.size)
            size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
            picture = picture.resize(size, Image.Resampling.BILINEAR)
        return picture

    def __call__(self, image, classes: str, proposals: str) -> tuple[np.ndarray, pd.DataFrame]:
        """`(overlay (H, W', 3) uint8 with legend, per-class areas)`; `ValueError` for bad input."""
        names = parse_class_names(classes)
        picture = self.prepare_image(image)
        with self._lock:
            generator = self.proposal_generator(proposals)
            (result,) = segment(
                picture, names, self.model, self.processor, proposal_generator=generator, cache=self.text_cache
            )
        seg_map = result["segmentation"]
        return np.asarray(overlay(picture, seg_map, names)), area_table(seg_map, names)

    def run_ui(self, image, classes: str, proposals: str) -> tuple[np.ndarray, pd.DataFrame]:
        """[`__call__`] for the UI: bad input becomes a `gr.Error` (an error toast), a single class a `gr.Warning`."""
        try:
            names = parse_class_names(classes)
            if len(names) == 1:
                gr.Warning(f"Only one class ({names[0]!r}): every pixel gets it. Type several class names.")
            return self(image, classes, proposals)
        except ValueError as err:
            raise gr.Error(str(err)) from None
        except OSError as err:  # e.g. a proposal checkpoint that cannot be found or downloaded
            raise gr.Error(f"Could not load the proposal source {proposals!r}: {err}") from None
        except Exception as err:  # anything else: logged in full, named in the UI (Gradio would only say "Error")
            logger.exception("segmentation failed")
            raise gr.Error(f"Segmentation failed: {type(err).__name__}: {err}") from None


def _example_images() -> list[str]:
    here = Path(__file__).resolve().parent
    for folder in (here / "examples", here.parent / "examples" / "images"):  # Space layout, then repository layout
        if (folder / "scene.png").is_file():
            return [os.fspath(folder / "scene.png")]
    return []


def build_demo(
    model_path: str | os.PathLike | None = None,
    *,
    segmenter: Segmenter | None = None,
    default_classes: str = DEFAULT_CLASSES,
    proposal_choices=None,
    allow_custom_proposals: bool | None = None,
) -> gr.Blocks:
    """The Gradio app. `model_path` (else `MAFT_MODEL`, else the tiny random model) is loaded once, here.

    `proposal_choices` default to `MAFT_PROPOSALS` or `("kmeans:8", "grid:4")`; `allow_custom_proposals` to
    `MAFT_ALLOW_CUSTOM_PROPOSALS` (default on). A ready `segmenter` replaces all three.
    """
    if segmenter is None:
        if proposal_choices is None:
            env = [spec.strip() for spec in os.environ.get("MAFT_PROPOSALS", "").split(",") if spec.strip()]
            proposal_choices = env or DEFAULT_PROPOSALS
        if allow_custom_proposals is None:
            allow_custom_proposals = os.environ.get("MAFT_ALLOW_CUSTOM_PROPOSALS", "1") not in ("0", "false", "False")
        segmenter = Segmenter(
            model_path or os.environ.get("MAFT_MODEL") or None,
            proposal_choices=proposal_choices,
            allow_custom_proposals=allow_custom_proposals,
            warm_up_classes=default_classes,
        )

    with gr.Blocks(title="MAFT open-vocabulary segmentation", analytics_enabled=False) as demo:
        gr.Markdown(DESCRIPTION)
        if segmenter.is_tiny_random:
            gr.Markdown(TINY_MODEL_NOTE, elem_id="tiny-model-note")
        else:
            gr.Markdown(f"Model: `{segmenter.model_path}`", elem_id="model-note")
        with gr.Row():
            with gr.Column():
                image = gr.Image(label="Image", type="pil", image_mode="RGB", sources=["upload"], elem_id="image")
                classes = gr.Textbox(
                    value=default_classes,
                    label="Class names (comma-separated)",
                    placeholder="sky, grass, road, car",
                    lines=1,
                    elem_id="classes",
                )
                proposals = gr.Dropdown(
                    choices=segmenter.proposal_choices,
                    value=segmenter.proposal_choices[0],
                    allow_custom_value=segmenter.allow_custom_proposals,
                    label="Proposal source",
                    info="kmeans:<k>, grid:<k>"
                    + (
                        ", or type mask2former:<checkpoint> / sam:<checkpoint>"
                        if segmenter.allow_custom_proposals
                        else ""
                    ),
                    elem_id="proposals",
                )
                submit = gr.Button("Segment", variant="primary", elem_id="submit")
            with gr.Column():
                result = gr.Image(
                    label="Segmentation",
                    type="numpy",
                    interactive=False,
                    buttons=["download", "fullscreen"],
                    elem_id="overlay",
                )
                areas = gr.Dataframe(headers=AREA_COLUMNS, label="Area per class", interactive=False, elem_id="areas")
        examples = _example_images()
        if examples:
            gr.Examples(examples=[[path, default_classes] for path in examples], inputs=[image, classes])
        submit.click(segmenter.run_ui, inputs=[image, classes, proposals], outputs=[result, areas], api_name="segment")
    demo.segmenter = segmenter  # for tests and embedding
    return demo


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    build_demo().launch()
