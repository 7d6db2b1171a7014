#!/usr/bin/env python
"""End-to-end cost of MAFT segmentation, stage by stage, against the crop baseline and CLIPSeg, in one run.

Every model has its real shapes and random weights (configs built here, nothing downloaded):

* MAFT: IP-CLIP ViT-B/16 at 480 px, mask start layer 8, CLIP text tower (12 x 512) with a word-level tokenizer;
* proposals: `Mask2FormerForUniversalSegmentation` (Swin-B backbone, 100 queries, 133 classes, COCO-panoptic sizes)
  and `SamModel` ViT-B (1024 px) on a point grid (`--points_per_side`, 32 in SAM's automatic mask generator; random
  weights cannot pass SAM's quality thresholds nor give distinct boxes, so thresholds and NMS are off and the 100
  best masks kept: the model's work is the same);
* the crop baseline of the paper: N crops of 224 px through CLIP ViT-B/16, each classified against the text classifier;
* CLIPSeg (`CLIPSegForImageSegmentation`, the sizes of CIDAS/clipseg-rd64-refined: ViT-B/16 at 352 px, reduce dim 64,
  refined decoder): as documented (one image-prompt pair per class, a batch of C copies of the image) and in its
  cheapest correct use (the vision encoder once, its layer 3/6/9 activations repeated into the decoder per class,
  text embeddings cached like MAFT's text classifier).

Stages (one image, and a batch of `--batch_size`): decode (JPEG -> RGB), proposals, text classifier cold (no cache)
and cached (from a cache folder), IP-CLIP (pre-processing + mask-aware forward), semantic map, write (PNG map + overlay
+ json, and a parquet row), and `segment()` as a whole. Then how each method's cost grows with C (20, 150, 847 classes)
and N (proposals), and bulk throughput of `scripts/segment.py` with 1 and 2 processes (`accelerate launch`, each
process with cores / processes threads; grid proposals, so the MAFT side is measured), scaling efficiency =
(images/s with 2 / images/s with 1) / 2.

Times are the best of `--repeats` runs; methods whose cost is linear in the batch of copies or crops are timed on a
chunk and scaled (marked `scaled`). Peak memory: on CPU the growth of the process's resident set over the stage (the
kernel's peak mark reset before it; freed memory is returned first with malloc_trim), on CUDA the growth of
`torch.cuda.max_memory_allocated`.

    python scripts/benchmark_end_to_end.py --quick                      # < 3 minutes on 2 CPU cores
    python scripts/benchmark_end_to_end.py                              # the full table (CPU: about an hour)
    python scripts/benchmark_end_to_end.py --device cuda --dtype fp16 --output_json docs/benchmark_end_to_end_cuda.json
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from maft_hf import MAFTConfig, MAFTImageProcessor, MAFTProcessor, MaskAwareCLIPModel, load_image
from maft_hf.inference.outputs import parquet_row, save_segmentation
from maft_hf.inference.pipeline import patch_grid_masks, proposal_class_scores, segment
from maft_hf.inference.semantic_map import classify_proposals, semantic_map
from maft_hf.inference.text_classifier import build_text_classifier
from maft_hf.inference.vocabulary import load_prompt_templates, load_vocabulary
from maft_hf.model.modeling_maft import pad_proposals
from maft_hf.proposals import Proposals

ROOT = Path(__file__).resolve().parents[1]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
VOCABULARIES = {20: "pascal_voc_20", 150: "ade20k_150", 847: "ade20k_847"}
CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
VIT_B16 = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, patch_size=16)
TEXT = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8, vocab_size=49408,
            max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)  # fmt: skip


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add(
        "--quick",
        action="store_true",
        help="Checks the script in < 3 min on 2 cores: small images, SAM at 512 px, "
        "one image per stage, 1 repeat, chunks of 2, a tiny model in the bulk runs. Not for the tables.",
    )
    add("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add("--dtype", choices=sorted(DTYPES), default="fp32")
    add("--compile", action="store_true", help="torch.compile the vision towers (IP-CLIP, crops, CLIPSeg).")
    add("--vocab_sizes", type=int, nargs="+", default=[20, 150, 847], choices=sorted(VOCABULARIES))
    add("--num_proposals", type=int, nargs="+", default=None, help="N for the N scaling (default 10 100 300).")
    add("--batch_size", type=int, default=None, help="Batch of the batch stages (default 8, quick 2).")
    add("--image_size", type=int, nargs=2, default=None, metavar=("H", "W"), help="Default 512 683 (quick 256 320).")
    add("--points_per_side", type=int, default=None, help="SAM point grid (default 32, quick 8).")
    add("--repeats", type=int, default=None, help="Timed runs per figure, the best kept (default 3, quick 1).")
    add("--chunk", type=int, default=None, help="Copies/crops per timed chunk of the linear peers (default 16).")
    add("--bulk_images", type=int, default=None, help="Images of the bulk runs (default 32, quick 6).")
    add("--skip_bulk", action="store_true", help="Leave out the bulk throughput runs.")
    add("--output_json", default=str(ROOT / "docs" / "benchmark_end_to_end.json"))
    add("--output_md", default=None, help="Markdown table (default: --output_json with .md).")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = dict(num_proposals=[10, 100] if quick else [10, 100, 300], batch_size=2 if quick else 8,
                    image_size=[256, 320] if quick else [512, 683], points_per_side=8 if quick else 32,
                    repeats=1 if quick else 3, chunk=2 if quick else 16, bulk_images=8 if quick else 32)  # fmt: skip
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.output_md = args.output_md or str(Path(args.output_json).with_suffix(".md"))
    return args


# ---------------------------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------------------------
def _kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def _reset_peak(device) -> int:
    """Free what can be freed, reset the peak mark; returns the baseline (bytes)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
        return _kib("VmRSS") * 1024
    except OSError:
        return -1


def _peak(device, baseline: int) -> int | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() - baseline
    return None if baseline < 0 else max(0, _kib("VmHWM") * 1024 - baseline)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def measure(fn, device, repeats: int, scale: float = 1.0, keep: list | None = None) -> dict:
    """Best time (ms, times `scale`) of `repeats` runs of `fn()`, the peak memory growth of the first; the result of
    the last run is appended to `keep` when given."""
    times, peak = [], None
    for run in range(repeats):
        baseline = _reset_peak(device) if run == 0 else None
        start = time.perf_counter()
        with torch.inference_mode():
            result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        if run == 0:
            peak = _peak(device, baseline)
    if keep is not None:
        keep.append(result)
    return {"ms": min(times) * 1000 * scale, "peak_mib": None if peak is None else peak / 2**20, "scaled": scale != 1}


# ---------------------------------------------------------------------------------------------------------------
# Models with real shapes and random weights
# ---------------------------------------------------------------------------------------------------------------
def build_tokenizer():
    """A word-level CLIP-like tokenizer (bos 49406, eos = pad 49407): prompts get about as many tokens as with CLIP's
    BPE, which is what the text tower's cost depends on."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = set()
    for text in [*load_prompt_templates(), *(n for size in VOCABULARIES.values() for n in load_vocabulary(size))]:
        words.update(re.findall(r"\w+|[^\w\s]", text.lower()))
    vocab = {"[UNK]": 0, **{word: i + 1 for i, word in enumerate(sorted(words))}, "<|startoftext|>": 49406}
    vocab["<|endoftext|>"] = 49407
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", 49406), ("<|endoftext|>", 49407)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>", unk_token="[UNK]", model_max_length=77)  # fmt: skip


def build_maft(args, device, dtype):
    torch.manual_seed(0)
    vision = dict(**VIT_B16, image_size=224, input_image_size=480, mask_start_layer=8)
    model = MaskAwareCLIPModel(MAFTConfig(vision_config=vision, text_config=TEXT, projection_dim=512))
    processor = MAFTProcessor(MAFTImageProcessor(size=480, image_mean=CLIP_MEAN, image_std=CLIP_STD), build_tokenizer())
    return model.to(device, dtype).eval(), processor


def build_mask2former(args, device, dtype):
    from transformers import (
        Mask2FormerConfig,
        Mask2FormerForUniversalSegmentation,
        Mask2FormerImageProcessor,
        SwinConfig,
    )

    from maft_hf.proposals.universal import UniversalSegmentationProposals

    torch.manual_seed(0)
    backbone = SwinConfig(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], window_size=12, image_size=384,
                          out_features=["stage1", "stage2", "stage3", "stage4"])  # fmt: skip
    config = Mask2FormerConfig(backbone_config=backbone, num_queries=100, num_labels=133,
                               id2label={i: f"class{i}" for i in range(133)})  # fmt: skip
    model = Mask2FormerForUniversalSegmentation(config).to(device, dtype).eval()
    short = min(args.image_size)
    processor = Mask2FormerImageProcessor(size={"shortest_edge": short, "longest_edge": 2 * short})
    return UniversalSegmentationProposals(model, device=device, image_processor=processor)


def build_sam(args, device, dtype):
    from transformers import SamConfig, SamImageProcessor, SamModel

    from maft_hf.proposals.sam import SAMProposals

    torch.manual_seed(0)
    side = 512 if args.quick else 1024  # the default config is ViT-B at 1024 px (facebook/sam-vit-base)
    config = SamConfig(vision_config={"image_size": side}, prompt_encoder_config={"image_size": side})
    model = SamModel(config).eval()
    for parameter in model.mask_decoder.parameters():  # the default init makes every mask alike: NMS would keep one
        if parameter.ndim > 1:
            torch.nn.init.normal_(parameter, 0.0, 2.0 / parameter.shape[-1] ** 0.5)
    model = model.to(device, dtype)
    processor = SamImageProcessor(size={"longest_edge": side}, pad_size={"height": side, "width": side})
    # random weights: no mask passes SAM's quality thresholds and all masks span the image, so box NMS would keep
    # one; thresholds and NMS are off and the 100 best kept (about what SAM's automatic generator returns)
    return SAMProposals(model, points_per_side=args.points_per_side, pred_iou_thresh=-math.inf,
                        stability_score_thresh=-math.inf, nms_iou=1.0, max_proposals=100, device=device,
                        image_processor=processor)  # fmt: skip


def build_clip(device, dtype):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    config = CLIPVisionConfig(**VIT_B16, image_size=224, projection_dim=512)
    return CLIPVisionModelWithProjection(config).to(device, dtype).eval()


def build_clipseg(device, dtype):
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation

    torch.manual_seed(0)
    config = CLIPSegConfig(text_config={k: v for k, v in TEXT.items()}, vision_config={**VIT_B16, "image_size": 224},
                           projection_dim=512, reduce_dim=64, extract_layers=[3, 6, 9],
                           use_complex_transposed_convolution=True)  # fmt: skip
    return CLIPSegForImageSegmentation(config).to(device, dtype).eval()


def make_images(folder: Path, count: int, size) -> list[Path]:
    """Synthetic photographs: smooth colour fields with blocks and noise, saved as JPEG (quality 90)."""
    rng, (height, width), paths = np.random.default_rng(0), size, []
    for index in range(count):
        base = rng.integers(0, 256, (4, 5, 3)).astype(np.float32)
        smooth = np.asarray(Image.fromarray(base.astype(np.uint8)).resize((width, height), Image.BICUBIC), np.float32)
        pixels = np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)
        paths.append(folder / f"image{index:03d}.jpg")
        Image.fromarray(pixels).save(paths[-1], quality=90)
    return paths


# ---------------------------------------------------------------------------------------------------------------
# The pipelines, step by step
# ---------------------------------------------------------------------------------------------------------------
def ipclip_logits(model, processor, pictures, proposals, classifier):
    pixel_values = processor.image_processor(pictures, return_tensors="pt")["pixel_values"].to(classifier.device)
    size = int(pixel_values.shape[-1])
    grid, valid = pad_proposals([patch_grid_masks(p.masks, model, size) for p in proposals])
    pixel_values = pixel_values.to(model.dtype)
    return classify_proposals(
        model, pixel_values, grid.to(classifier.device), classifier.to(model.dtype), valid.to(classifier.device)
    )


def semantic_maps(logits, proposals, names):
    return [
        semantic_map(
            proposal_class_scores(logits[i, : p.num_proposals].float(), p, names, None),
            p.masks.to(logits.device),
            from_logits=False,
        )
        for i, p in enumerate(proposals)
    ]


def crop_baseline(clip, picture, proposals, classifier, chunk):
    """The paper's baseline: each proposal's bounding box cropped (background kept), resized to 224 px, through CLIP,
    classified against the text classifier. Returns the (N, C) logits of the first `chunk` crops."""
    image = torch.from_numpy(np.array(picture)).permute(2, 0, 1).float().div(255)
    crops = []
    for mask in proposals.masks[:chunk]:
        rows, cols = torch.nonzero(mask > 0.5, as_tuple=True)
        top, bottom = (int(rows.min()), int(rows.max()) + 1) if len(rows) else (0, image.shape[1])
        left, right = (int(cols.min()), int(cols.max()) + 1) if len(cols) else (0, image.shape[2])
        crops.append(F.interpolate(image[None, :, top:bottom, left:right], size=(224, 224), mode="bilinear")[0])
    pixels = (torch.stack(crops) - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]
    embeds = F.normalize(clip(pixel_values=pixels.to(classifier.device, clip.dtype)).image_embeds.float(), dim=-1)
    return 100 * embeds @ classifier.T


def clipseg_inputs(picture, names, tokenizer, device, dtype):
    from transformers import ViTImageProcessor

    processor = ViTImageProcessor(size={"height": 352, "width": 352}, image_mean=CLIP_MEAN, image_std=CLIP_STD)
    pixels = processor(picture, return_tensors="pt")["pixel_values"].to(device, dtype)
    return pixels, tokenizer(list(names), padding=True, return_tensors="pt").to(device)


def clipseg_documented(model, pixels, tokens, start, stop):
    """As in the model's documentation: one (image, prompt) pair per class, a batch of copies (classes start:stop)."""
    ids = {k: v[start:stop] for k, v in tokens.items()}
    return model(pixel_values=pixels.expand(stop - start, -1, -1, -1), **ids).logits


def clipseg_cheapest(model, pixels, conditional, size, chunk=64):
    """The vision encoder once; its activations repeated into the decoder for each class (chunks of `chunk`
    classes), with cached text embeddings; argmax over classes at 352 px, resized (nearest) to the image."""
    hidden = model.clip.vision_model(pixel_values=pixels, output_hidden_states=True, interpolate_pos_encoding=True)
    activations = [hidden.hidden_states[i + 1] for i in model.extract_layers]
    best, label = None, None
    for start in range(0, conditional.shape[0], chunk):
        cond = conditional[start : start + chunk]
        logits = model.decoder([a.expand(cond.shape[0], -1, -1) for a in activations], cond).logits.reshape(
            cond.shape[0], 352, 352
        )
        value, index = logits.max(dim=0)
        if best is None:
            best, label = value, index
        else:
            better = value > best
            best, label = torch.where(better, value, best), torch.where(better, index + start, label)
    return F.interpolate(label[None, None].float(), size=size, mode="nearest")[0, 0].long()


def random_box_proposals(count: int, size, seed: int = 0) -> Proposals:
    """`count` rectangular masks at random places and sizes (1/16 to 1/2 of each side)."""
    rng, (height, width) = np.random.default_rng(seed), size
    masks = torch.zeros(count, height, width)
    for mask in masks:
        h, w = rng.integers(height // 16, height // 2), rng.integers(width // 16, width // 2)
        top, left = rng.integers(0, height - h), rng.integers(0, width - w)
        mask[top : top + h, left : left + w] = 1
    return Proposals(masks=masks)


# ---------------------------------------------------------------------------------------------------------------
# Sections of the report
# ---------------------------------------------------------------------------------------------------------------
def text_classifier_costs(args, device, maft, processor, vocabularies, folder) -> dict:
    from maft_hf.inference import text_classifier as module

    costs, cache = {}, module.TextClassifierCache(max_entries=0, cache_dir=folder / "text_cache")
    for size, names in vocabularies.items():
        cold = None
        if not args.quick or size == min(vocabularies):  # 847 x 14 prompts take minutes on a CPU
            cold = measure(lambda: build_text_classifier(maft, processor.tokenizer, names), device, 1)
            build_text_classifier(maft, processor.tokenizer, names, cache=cache)
        else:  # --quick: a random classifier under the right key, so the cached path is still measured
            key = module.text_classifier_cache_key(maft, processor.tokenizer, names, load_prompt_templates())
            cache.put(key, F.normalize(torch.randn(len(names), maft.config.projection_dim), dim=-1))

        def cached():
            module._FINGERPRINTS.pop(maft, None)  # as in a new process: hash the text tower, read the file
            build_text_classifier(maft, processor.tokenizer, names, cache=cache)

        costs[size] = {"cold": cold, "cached": measure(cached, device, args.repeats)}
        print(
            f"  text classifier C={size}: cold {cold and round(cold['ms'])} ms, cached {costs[size]['cached']['ms']:.0f} ms"
        )
    return costs


def stage_costs(args, device, maft, processor, generators, classifiers, vocabularies, paths, folder) -> dict:
    """Per generator, for one image and a batch: each stage's time and peak memory (totals; the report divides by the
    batch). With --quick: one image only, IP-CLIP and the semantic map at C = 150 only, no `segment()` check."""
    table, repeats = {}, args.repeats
    sizes = [150 if 150 in vocabularies else max(vocabularies)] if args.quick else list(vocabularies)
    for gen_name, generator in generators.items():
        for batch in [1] if args.quick else sorted({1, args.batch_size}):
            keep = []
            row = {"decode": measure(lambda: [load_image(p) for p in paths[:batch]], device, repeats, keep=keep)}
            pictures = keep.pop()
            row["proposals"] = measure(lambda: [generator([p])[0] for p in pictures], device, repeats, keep=keep)
            proposals = keep.pop()
            row["num_proposals"] = [p.num_proposals for p in proposals]
            for size in sizes:
                names, classifier = vocabularies[size], classifiers[size]
                row[f"ipclip C={size}"] = measure(
                    lambda: ipclip_logits(maft, processor, pictures, proposals, classifier), device, repeats, keep=keep
                )
                logits = keep.pop()
                row[f"semantic map C={size}"] = measure(
                    lambda: semantic_maps(logits, proposals, names), device, repeats, keep=keep
                )
                maps = [m.cpu() for m in keep.pop()]
                if not args.quick:
                    row[f"segment() C={size}"] = measure(lambda: segment(pictures, names, maft, processor, proposals=proposals,
                        text_classifier=classifier, batch_size=batch, ensemble_weight=None), device, repeats)  # fmt: skip
            out, metadata = folder / "write", {"image": "x", "num_proposals": 1}
            row["write png+overlay+json"] = measure(lambda: [save_segmentation(out, f"x{i}", p, m, names)
                                                    for i, (p, m) in enumerate(zip(pictures, maps))], device, repeats)  # fmt: skip
            row["write parquet row"] = measure(
                lambda: [parquet_row(i, "x", m, names, metadata) for i, m in enumerate(maps)], device, repeats
            )
            table[f"{gen_name}, batch {batch}"] = {"batch": batch, **row}
            print(
                f"  stages {gen_name} batch {batch}: proposals {row['proposals']['ms']:.0f} ms, N = {row['num_proposals']}"
            )
    return table


def scaling_costs(args, device, maft, processor, clip, clipseg, classifiers, vocabularies, picture) -> dict:
    """Per image, no proposal model, no decode: MAFT (IP-CLIP + semantic map), crops (+ the same semantic map), CLIPSeg
    documented and cheapest, over C (at N = 100) and over N (at C = 150)."""
    size, chunk, repeats = (picture.height, picture.width), args.chunk, args.repeats
    pixels, _ = clipseg_inputs(picture, ["x"], processor.tokenizer, device, clipseg.dtype)
    combos = [(n, 150 if 150 in vocabularies else max(vocabularies)) for n in args.num_proposals]
    combos += [(100, c) for c in vocabularies if (100, c) not in combos]
    results = {"maft": {}, "crops": {}, "clipseg documented": {}, "clipseg cheapest": {}, "clipseg text": {}}
    for n, c in combos:
        proposals, names, classifier, keep = [random_box_proposals(n, size)], vocabularies[c], classifiers[c], []
        ip = measure(
            lambda: ipclip_logits(maft, processor, [picture], proposals, classifier), device, repeats, keep=keep
        )
        logits = keep.pop()
        smap = measure(lambda: semantic_maps(logits, proposals, names), device, repeats)
        crops = measure(
            lambda: crop_baseline(clip, picture, proposals[0], classifier, min(chunk, n)),
            device,
            repeats,
            n / min(chunk, n),
        )
        results["maft"][f"N={n} C={c}"] = {
            "ms": ip["ms"] + smap["ms"],
            "peak_mib": ip["peak_mib"],
            "ipclip_ms": ip["ms"],
            "map_ms": smap["ms"],
        }
        results["crops"][f"N={n} C={c}"] = {**crops, "ms": crops["ms"] + smap["ms"]}
        log(f"  N={n} C={c}: MAFT {ip['ms'] + smap['ms']:.0f} ms, crops {crops['ms'] + smap['ms']:.0f} ms")
    for c, names in vocabularies.items():
        _, tokens = clipseg_inputs(picture, names, processor.tokenizer, device, clipseg.dtype)
        k = min(chunk, c)

        def documented():
            clipseg_documented(clipseg, pixels, tokens, 0, k).max(dim=0)

        results["clipseg documented"][f"C={c}"] = measure(documented, device, repeats, c / k)
        with torch.inference_mode():
            conditional = torch.cat([clipseg.get_conditional_embeddings(input_ids=tokens["input_ids"][s : s + 256],
                attention_mask=tokens["attention_mask"][s : s + 256], batch_size=len(tokens["input_ids"][s : s + 256]))
                for s in range(0, c, 256)])  # fmt: skip
        results["clipseg text"][f"C={c}"] = measure(lambda: clipseg.get_conditional_embeddings(input_ids=tokens["input_ids"][:k],
            attention_mask=tokens["attention_mask"][:k], batch_size=k), device, repeats, c / k)  # fmt: skip
        classes = min(c, 128) if args.quick else c  # --quick: the decoder (linear in C) timed on 128 classes, scaled
        cheapest = measure(lambda: clipseg_cheapest(clipseg, pixels, conditional[:classes], size), device, repeats)
        if classes < c:
            encoder = measure(lambda: clipseg.clip.vision_model(pixel_values=pixels, output_hidden_states=True,
                              interpolate_pos_encoding=True), device, repeats)  # fmt: skip
            cheapest["ms"] = encoder["ms"] + (cheapest["ms"] - encoder["ms"]) * c / classes
            cheapest["scaled"] = True
        results["clipseg cheapest"][f"C={c}"] = cheapest
        doc, cheap = results["clipseg documented"][f"C={c}"]["ms"], results["clipseg cheapest"][f"C={c}"]["ms"]
        log(f"  C={c}: CLIPSeg documented {doc:.0f} ms, cheapest {cheap:.0f} ms")
    return results


def bulk_throughput(args, maft, processor, paths, folder) -> dict:
    """images/s of `scripts/segment.py` with 1 and 2 processes (their segmentation loops, startup excluded)."""
    checkpoint = folder / "maft-bulk"
    if args.quick:  # loading ViT-B twice and a cold text classifier take minutes on a loaded CPU
        from maft_hf.testing import build_tiny_checkpoint

        build_tiny_checkpoint(checkpoint, input_image_size=64)
    else:
        maft.to(torch.float32).save_pretrained(checkpoint)
        processor.save_pretrained(checkpoint)
    cores = os.cpu_count() or 1
    results = {}
    for processes in (1, 2):
        env = {k: v for k, v in os.environ.items() if not k.startswith("ACCELERATE_")}
        env.update(OMP_NUM_THREADS=str(max(1, cores // processes)), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        if args.device == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""
        launcher = [sys.executable]
        if processes > 1:
            launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
                        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517"]  # fmt: skip
        command = [*launcher, str(ROOT / "scripts" / "segment.py"), "--model", str(checkpoint), "--offline", "--images",
                   str(paths[0].parent), "--vocabulary", "ade20k_150", "--proposals", "grid:10", "--batch_size",
                   str(args.batch_size), "--output_dir", str(folder / f"bulk{processes}"), "--output_format", "parquet",
                   "--chunk_size", "4", "--log_level", "INFO", "--cache_dir", str(folder / "text_cache")]  # fmt: skip
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
        if done.returncode != 0:
            raise RuntimeError(f"The bulk run failed:\n{done.stderr[-4000:]}")
        loops = [(int(n), float(s)) for n, s in re.findall(r"segmented (\d+) images in ([\d.]+) s", done.stderr)]
        images, seconds = sum(n for n, _ in loops), max(s for _, s in loops)
        results[processes] = {"model": "tiny (--quick)" if args.quick else "ViT-B/16", "images": images, "seconds": seconds, "images_per_s": images / seconds,
                              "threads_per_process": max(1, cores // processes), "per_process": loops}  # fmt: skip
        log(f"  bulk {processes} process(es): {images / seconds:.2f} images/s")
    results["scaling_efficiency"] = results[2]["images_per_s"] / results[1]["images_per_s"] / 2
    return results


# ---------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------
def headline(report) -> dict:
    scaling, stages, ratios = report["scaling"], report["stages"], {}
    for c in report["settings"]["vocab_sizes"]:
        maft = scaling["maft"].get(f"N=100 C={c}")
        if maft is None:
            continue
        for usage in ("documented", "cheapest"):
            ratios[f"CLIPSeg {usage} / MAFT, C={c}, classification at N=100"] = (
                scaling[f"clipseg {usage}"][f"C={c}"]["ms"] / maft["ms"]
            )
        for gen_name in report["settings"]["generators"]:
            row = stages.get(f"{gen_name}, batch 1")
            if row and f"ipclip C={c}" in row:
                total = row["proposals"]["ms"] + row[f"ipclip C={c}"]["ms"] + row[f"semantic map C={c}"]["ms"]
                for usage in ("documented", "cheapest"):
                    ratios[f"CLIPSeg {usage} / MAFT with {gen_name} proposals, C={c}"] = (
                        scaling[f"clipseg {usage}"][f"C={c}"]["ms"] / total
                    )
    if "N=100 C=150" in scaling["maft"]:
        ratios["crops / MAFT, N=100, C=150"] = (
            scaling["crops"]["N=100 C=150"]["ms"] / scaling["maft"]["N=100 C=150"]["ms"]
        )
    if report.get("bulk"):
        ratios["bulk scaling efficiency, 2 processes"] = report["bulk"]["scaling_efficiency"]
    return ratios


def _cell(entry):
    if entry is None:
        return "-", "-"
    ms = f"{entry['ms']:,.0f}{' (scaled)' if entry.get('scaled') else ''}"
    return ms, "-" if entry.get("peak_mib") is None else f"{entry['peak_mib']:,.0f}"


def markdown(report) -> str:
    settings, lines = report["settings"], []
    lines += [f"End-to-end benchmark: {settings['device_name']}, torch {settings['torch']}, {settings['dtype']}, images "
              f"{settings['image_size'][0]}x{settings['image_size'][1]}, batch {settings['batch_size']}"
              f"{', --quick' if settings['quick'] else ''}. Times in ms (best of {settings['repeats']}), peak memory growth in MiB.", ""]  # fmt: skip
    lines += ["### Headline ratios", "", "| ratio | value |", "|---|---:|"]
    lines += [f"| {name} | {value:.2f} |" for name, value in report["headline"].items()] + [""]
    lines += ["### Stages (ms per image: totals divided by the batch)", ""]
    for name, row in report["stages"].items():
        lines += [
            f"**{name}** (N = {row['num_proposals']})",
            "",
            "| stage | ms / image | peak MiB |",
            "|---|---:|---:|",
        ]
        for stage, entry in row.items():
            if isinstance(entry, dict):
                ms, peak = _cell({**entry, "ms": entry["ms"] / row["batch"]})
                lines.append(f"| {stage} | {ms} | {peak} |")
        lines.append("")
    lines += [
        "### Text classifier (14 templates per class)",
        "",
        "| C | cold ms | cached ms (new process) |",
        "|---:|---:|---:|",
    ]
    for c, entry in report["text_classifier"].items():
        lines.append(f"| {c} | {_cell(entry['cold'])[0]} | {_cell(entry['cached'])[0]} |")
    lines += ["", "### Cost per image against C and N (no proposal model, no decode)", "",
              "| method | setting | ms | peak MiB |", "|---|---|---:|---:|"]  # fmt: skip
    for method, entries in report["scaling"].items():
        for setting, entry in entries.items():
            ms, peak = _cell(entry)
            lines.append(f"| {method} | {setting} | {ms} | {peak} |")
    if report.get("bulk"):
        bulk = report["bulk"]
        lines += ["", "### Bulk segmentation (scripts/segment.py, grid:10 proposals, parquet output)", "",
                  "| processes | model | threads each | images | loop s | images/s |", "|---:|---|---:|---:|---:|---:|"]  # fmt: skip
        for p in (1, 2):
            b = bulk[p]
            lines.append(
                f"| {p} | {b['model']} | {b['threads_per_process']} | {b['images']} | {b['seconds']:.1f} | {b['images_per_s']:.2f} |"
            )
        lines += ["", f"Scaling efficiency (ips_2 / ips_1) / 2 = {bulk['scaling_efficiency']:.2f}."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    torch.set_flush_denormal(True)  # random weights can give denormal activations (SAM: 3x slower), real ones do not
    started = time.perf_counter()
    vocabularies = {size: load_vocabulary(VOCABULARIES[size]) for size in sorted(args.vocab_sizes)}
    with tempfile.TemporaryDirectory(prefix="maft_e2e_") as tmp:
        folder = Path(tmp)
        (folder / "images").mkdir()
        paths = make_images(folder / "images", max(args.batch_size, args.bulk_images), args.image_size)
        log("building models (random weights, real shapes)")
        maft, processor = build_maft(args, device, dtype)
        generators = {
            "Mask2Former Swin-B": build_mask2former(args, device, dtype),
            "SAM ViT-B": build_sam(args, device, dtype),
        }
        clip, clipseg = build_clip(device, dtype), build_clipseg(device, dtype)
        if args.compile:
            maft.vision_model = torch.compile(maft.vision_model)
            clip, clipseg = torch.compile(clip), torch.compile(clipseg)
        report = {"settings": {**{k: v for k, v in vars(args).items() if k not in ("output_json", "output_md")},
                               "generators": list(generators), "torch": torch.__version__, "python": platform.python_version(),
                               "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else
                               f"{platform.machine()} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} threads"}}  # fmt: skip
        log("text classifiers")
        report["text_classifier"] = text_classifier_costs(args, device, maft, processor, vocabularies, folder)
        with torch.inference_mode():
            classifiers = {c: build_text_classifier(maft, processor.tokenizer, names, cache=folder / "text_cache").to(device)
                           for c, names in vocabularies.items()}  # fmt: skip
        log("stages")
        report["stages"] = stage_costs(
            args, device, maft, processor, generators, classifiers, vocabularies, paths, folder
        )
        del generators
        log("scaling with C and N")
        report["scaling"] = scaling_costs(
            args, device, maft, processor, clip, clipseg, classifiers, vocabularies, load_image(paths[0])
        )
        if not args.skip_bulk:
            log("bulk throughput")
            report["bulk"] = bulk_throughput(args, maft, processor, paths[: args.bulk_images], folder)
    report["headline"] = headline(report)
    report["settings"]["seconds"] = time.perf_counter() - started
    Path(args.output_json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output_json).write_text(json.dumps(report, indent=2, default=str) + "\n")
    Path(args.output_md).write_text(markdown(report))
    print(markdown(report))
    print(f"wrote {args.output_json} and {args.output_md} in {report['settings']['seconds']:.0f} s")
    return report


if __name__ == "__main__":
    main()
