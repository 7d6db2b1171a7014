"""Classify masks you already have (an annotation tool, superpixels, another model) with any vocabulary.

The masks file is a label map image (one region per id, 255 = none) or a `.npy` of `(N, H, W)` masks or an
`(H, W)` label map. Masks of another size than the image are resized bilinearly to it.

    python examples/own_masks.py --masks examples/images/scene_regions.png --classes sky grass road wall tree person car
"""

import argparse

from maft_hf import MAFTProcessor, MaskAwareCLIPModel, segment
from maft_hf.inference.outputs import read_mask_file, save_segmentation
from maft_hf.proposals import UserMaskProposals

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model", default="org/maft-vitb16", help="MAFT checkpoint: Hub id or local directory.")
parser.add_argument("--offline", action="store_true", help="Load local / cached files only.")
parser.add_argument("--image", default="examples/images/scene.png")
parser.add_argument("--masks", default="examples/images/scene_regions.png", help="Label map PNG or .npy masks.")
parser.add_argument("--classes", nargs="+", default=["sky", "grass", "road", "wall", "tree", "person", "car"])
parser.add_argument("--output_dir", default="outputs/own_masks")
args = parser.parse_args()

model = MaskAwareCLIPModel.from_pretrained(args.model, local_files_only=args.offline)
processor = MAFTProcessor.from_pretrained(args.model, local_files_only=args.offline)
masks = UserMaskProposals(read_mask_file(args.masks))  # or a numpy array / tensor / list of PIL masks

(result,) = segment(args.image, args.classes, model, processor, masks)
for number, class_id in enumerate(result["scores"].argmax(-1).tolist()):  # label maps: one mask per id, ascending
    print(f"mask {number}: {args.classes[class_id]}")
record = save_segmentation(args.output_dir, "scene", args.image, result["segmentation"], args.classes)
print(f"Saved {args.output_dir}/{record['overlay']}")
