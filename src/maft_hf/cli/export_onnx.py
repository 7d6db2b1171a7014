"""Export the mask-aware image encoder of a MAFT checkpoint to ONNX (any number of proposals), and check it
(docs/export.md; needs `pip install "maft_hf[export]"`).

    python scripts/export_onnx.py --checkpoint maft-vitb16 --output maft-vitb16.onnx

The graph maps `pixel_values (batch, 3, S, S)` (normalised as `MAFTProcessor` does) and `proposal_masks (batch, N, M,
M)` (probabilities; M = `--mask_size`, default S) to `mask_embeds (batch, N, projection_dim)`, the L2-normalised
projected proposal embeddings; `batch` and `N` are dynamic. Unless `--no_verify`, onnxruntime runs the file with two
values of N and is compared with PyTorch (`--atol`).
"""

from __future__ import annotations

import argparse
import logging

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)


class MaskEmbeddings(nn.Module):
    """`(pixel_values, proposal_masks) -> mask_embeds`: the exported computation of a `MaskAwareCLIPModel`."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor, proposal_masks: torch.Tensor) -> torch.Tensor:
        features = self.model.get_mask_features(pixel_values, proposal_masks).pooler_output
        return F.normalize(features, dim=-1)


def example_inputs(model, batch: int = 1, num_proposals: int = 3, mask_size: int | None = None, seed: int = 0):
    """Random `(pixel_values, proposal_masks)` at the model's input size (masks at `mask_size`, default the same)."""
    vision = model.config.vision_config
    size = vision.input_image_size
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randn(batch, vision.num_channels, size, size, generator=generator)
    return pixels, torch.rand(batch, num_proposals, mask_size or size, mask_size or size, generator=generator)


def export_onnx(model, path, mask_size: int | None = None, opset: int | None = None) -> str:
    """Export `MaskEmbeddings(model)` with the dynamo exporter, dynamic `batch` and `N`; returns `path`."""
    from torch.export import Dim

    module = MaskEmbeddings(model.eval()).eval()
    batch, proposals = Dim("batch", min=1, max=1024), Dim("num_proposals", min=1, max=4096)
    program = torch.onnx.export(
        module,
        example_inputs(model, batch=2, num_proposals=3, mask_size=mask_size),
        dynamo=True,
        input_names=["pixel_values", "proposal_masks"],
        output_names=["mask_embeds"],
        dynamic_shapes={"pixel_values": {0: batch}, "proposal_masks": {0: batch, 1: proposals}},
        opset_version=opset,
    )
    program.save(str(path))
    return str(path)


def verify_onnx(model, path, mask_size: int | None = None, atol: float = 1e-4) -> float:
    """Largest |onnxruntime - PyTorch| over random inputs with N = 1 and N = 7; `ValueError` above `atol`."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    module = MaskEmbeddings(model.eval()).eval()
    worst = 0.0
    for seed, (batch, num_proposals) in enumerate([(1, 1), (2, 7)]):
        pixels, masks = example_inputs(model, batch, num_proposals, mask_size, seed=seed + 1)
        (ours,) = session.run(None, {"pixel_values": pixels.numpy(), "proposal_masks": masks.numpy()})
        with torch.no_grad():
            expected = module(pixels, masks)
        worst = max(worst, (torch.from_numpy(ours) - expected).abs().max().item())
    if not worst <= atol:
        raise ValueError(f"The ONNX model differs from PyTorch by {worst:.3g} (> atol {atol}).")
    return worst


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--checkpoint", required=True, help="MAFT checkpoint directory or Hub id.")
    add("--output", required=True, help="The .onnx file to write.")
    add("--mask_size", type=int, default=None, help="Side of the proposal masks (default: input).")
    add("--opset", type=int, default=None, help="ONNX opset (default: the exporter's).")
    add("--atol", type=float, default=1e-4, help="Largest accepted |onnxruntime - PyTorch|.")
    add("--no_verify", action="store_true", help="Do not run the file in onnxruntime.")
    add("--local_files_only", action="store_true", help="Do not use the network.")
    return parser.parse_args(argv)


def main(argv=None):
    from ..hub.conversion import pretrained_options
    from ..model.modeling_maft import MaskAwareCLIPModel

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.mask_size is not None and args.mask_size < 1:
        raise ValueError(f"--mask_size must be positive, got {args.mask_size}.")
    options = pretrained_options(True if args.local_files_only else None)
    model = MaskAwareCLIPModel.from_pretrained(args.checkpoint, attn_implementation="sdpa", **options).eval()
    path = export_onnx(model, args.output, args.mask_size, args.opset)
    logger.info("Wrote %s", path)
    if not args.no_verify:
        logger.info("onnxruntime matches PyTorch to %.3g", verify_onnx(model, path, args.mask_size, args.atol))
    return path
