"""Segment with SAM's automatic masks as proposals (N decided by SAM), classified by MAFT.

python examples/sam_proposals.py --sam facebook/sam-vit-base --classes sky grass road wall tree person car
"""

import argparse

from maft_hf import MAFTProcessor, MaskAwareCLIPModel, segment
from maft_hf.inference.outputs import save_segmentation
from maft_hf.proposals import load_proposal_generator

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model", default="org/maft-vitb16", help="MAFT checkpoint: Hub id or local directory.")
parser.add_argument("--sam", default="facebook/sam-vit-base", help="SamModel checkpoint: Hub id or local directory.")
parser.add_argument("--points_per_side", type=int, default=16, help="SAM prompt grid (16 x 16 points).")
parser.add_argument("--offline", action="store_true", help="Load local / cached files only.")
parser.add_argument("--image", default="examples/images/scene.png")
parser.add_argument("--classes", nargs="+", default=["sky", "grass", "road", "wall", "tree", "person", "car"])
parser.add_argument("--output_dir", default="outputs/sam_proposals")
args = parser.parse_args()

model = MaskAwareCLIPModel.from_pretrained(args.model, local_files_only=args.offline)
processor = MAFTProcessor.from_pretrained(args.model, local_files_only=args.offline)
sam = load_proposal_generator(f"sam:{args.sam}", points_per_side=args.points_per_side, local_files_only=args.offline)

(result,) = segment(args.image, args.classes, model, processor, sam)  # SAM has no class scores: no ensemble
print(f"SAM gave {result['scores'].shape[0]} proposals")
record = save_segmentation(args.output_dir, "scene", args.image, result["segmentation"], args.classes)
print(f"Saved {args.output_dir}/{record['overlay']}")
