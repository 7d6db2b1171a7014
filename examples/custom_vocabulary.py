"""Segment with your own vocabulary: a text file (one class per line, synonyms after commas) or a shipped name
(`ade20k_150`, `coco_stuff_171`, `pascal_context_59`, ...). Writes the class-id map, overlay and per-class areas.

    python examples/custom_vocabulary.py --vocabulary examples/classes.txt
    python examples/custom_vocabulary.py --vocabulary ade20k_150 --image photo.jpg
"""

import argparse

from maft_hf import MAFTProcessor, MaskAwareCLIPModel, TextClassifierCache, load_vocabulary, segment
from maft_hf.inference.outputs import save_segmentation
from maft_hf.proposals import load_proposal_generator

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model", default="org/maft-vitb16", help="MAFT checkpoint: Hub id or local directory.")
parser.add_argument("--mask2former", default="facebook/mask2former-swin-base-coco-panoptic", help="Proposal model.")
parser.add_argument("--offline", action="store_true", help="Load local / cached files only.")
parser.add_argument("--image", default="examples/images/scene.png")
parser.add_argument("--vocabulary", default="examples/classes.txt", help="Shipped name or text file.")
parser.add_argument("--cache_dir", default=None, help="Keep text classifiers on disk: large vocabularies load fast.")
parser.add_argument("--output_dir", default="outputs/custom_vocabulary")
args = parser.parse_args()

names = load_vocabulary(args.vocabulary)  # ["sky", "grass, lawn", ...]: index i = class id i
model = MaskAwareCLIPModel.from_pretrained(args.model, local_files_only=args.offline)
processor = MAFTProcessor.from_pretrained(args.model, local_files_only=args.offline)
proposals = load_proposal_generator(f"mask2former:{args.mask2former}", local_files_only=args.offline)
cache = TextClassifierCache(cache_dir=args.cache_dir)

(result,) = segment(args.image, names, model, processor, proposals, cache=cache)
record = save_segmentation(args.output_dir, "scene", args.image, result["segmentation"], names)
for area in record["classes"]:
    print(f"{area['name']:>20s}: {100 * area['fraction']:5.1f}% ({area['pixels']} px)")
