"""mIoU and per-class IoU of a MAFT checkpoint on a dataset saved with `save_to_disk` (by `scripts/prepare_benchmark.py`
or `examples/finetune_own_dataset.py`; default: 8 synthetic images). `scripts/evaluate.py` adds reports, several GPUs.

    python examples/evaluate.py --model outputs/finetune_own_dataset --dataset outputs/own_data/dataset
"""

import argparse

import torch
from datasets import DatasetDict, load_from_disk

from maft_hf import MAFTProcessor, MaskAwareCLIPModel
from maft_hf.data import get_class_names, make_synthetic_dataset
from maft_hf.evaluation.loop import evaluate_segmentation
from maft_hf.inference.vocabulary import load_vocabulary
from maft_hf.training import load_training_proposal_generator

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model", default="org/maft-vitb16", help="MAFT checkpoint: Hub id or local directory.")
parser.add_argument("--dataset", help="A save_to_disk directory (default: a tiny synthetic set).")
parser.add_argument("--split", help="Split of a DatasetDict (default: its first).")
parser.add_argument("--classes", help="Vocabulary file or shipped name (default: the names stored in the dataset).")
parser.add_argument("--proposals", default="mask2former:facebook/mask2former-swin-base-coco-panoptic")
parser.add_argument("--offline", action="store_true", help="Load local / cached files only.")
args = parser.parse_args()

dataset = load_from_disk(args.dataset) if args.dataset else make_synthetic_dataset(8, 64, stream=1)
if isinstance(dataset, DatasetDict):
    dataset = dataset[args.split or next(iter(dataset))]
device = "cuda" if torch.cuda.is_available() else "cpu"
model = MaskAwareCLIPModel.from_pretrained(args.model, local_files_only=args.offline).to(device)
processor = MAFTProcessor.from_pretrained(args.model, local_files_only=args.offline)
proposals = load_training_proposal_generator(args.proposals, local_files_only=args.offline, device=device)
names = load_vocabulary(args.classes or get_class_names(dataset) or parser.error("Give --classes: none stored."))
ignore_index = 255 if len(names) < 255 else 65535  # unlabelled: 255 in 8-bit label maps, 65535 in 16-bit ones
scores = evaluate_segmentation(model, processor, dataset, names, proposals, ignore_index=ignore_index, progress=False)
print(f"mIoU {scores['mIoU']:.2f} on {scores['num_images']} images, {scores['num_excluded_classes']} classes left out")
for name, iou in zip(names, scores["per_class_iou"]):  # nan: absent from the labels and the predictions
    print(f"{name:>20s}: {iou:5.1f}")
