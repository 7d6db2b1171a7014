"""Quick start: one image + a list of words -> a colour overlay PNG with a legend.

python examples/segment_image.py --image examples/images/scene.png --classes sky grass road wall tree person car
"""

import argparse

from maft_hf import MAFTProcessor, MaskAwareCLIPModel, load_image, save_overlay, segment
from maft_hf.proposals import load_proposal_generator

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model", default="org/maft-vitb16", help="MAFT checkpoint: Hub id or local directory.")
parser.add_argument("--mask2former", default="facebook/mask2former-swin-base-coco-panoptic", help="Proposal model.")
parser.add_argument("--offline", action="store_true", help="Load local / cached files only.")
parser.add_argument("--image", default="examples/images/scene.png")
parser.add_argument("--classes", nargs="+", default=["sky", "grass", "road", "wall", "tree", "person", "car"])
parser.add_argument("--output", default="outputs/scene_overlay.png")
args = parser.parse_args()

model = MaskAwareCLIPModel.from_pretrained(args.model, local_files_only=args.offline)
processor = MAFTProcessor.from_pretrained(args.model, local_files_only=args.offline)
proposals = load_proposal_generator(f"mask2former:{args.mask2former}", local_files_only=args.offline)

image = load_image(args.image)  # any mode -> RGB
(result,) = segment(image, args.classes, model, processor, proposals)  # ensemble with Mask2Former's scores, 0.7
save_overlay(args.output, image, result["segmentation"], result["class_names"])
print(f"Saved {args.output}")
