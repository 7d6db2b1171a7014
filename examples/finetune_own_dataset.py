"""Fine-tune MAFT on your own data: images (*.jpg, *.png), label maps (PNGs of the same stems: class ids, 255 =
unlabelled) and classes.txt (line i = class i) become a `datasets` dataset (`save_to_disk` under `--data_dir`) that
`maft-finetune` (`scripts/finetune.py`) trains on; its other flags pass through. Without folders a tiny synthetic set is written first.

    python examples/finetune_own_dataset.py --images my/images --labels my/labels --classes my/classes.txt
"""

import argparse
from pathlib import Path

from datasets import Dataset, DatasetDict, Features, Image

from maft_hf.cli import finetune
from maft_hf.data import dataset_info_with_class_names, get_class_names, make_synthetic_dataset
from maft_hf.inference.vocabulary import load_vocabulary

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model", default="org/maft-vitb16", help="Starting checkpoint (MAFT or CLIP): Hub id or path.")
parser.add_argument("--images", help="Folder of images (default: a tiny synthetic set).")
parser.add_argument("--labels", help="Folder of label maps (default: labels/ next to --images).")
parser.add_argument("--classes", help="Text file of class names (default: classes.txt next to --images).")
parser.add_argument("--proposals", default="mask2former:facebook/mask2former-swin-base-coco-panoptic")
parser.add_argument("--data_dir", default="outputs/own_data", help="Where the dataset (and synthetic files) go.")
parser.add_argument("--output_dir", default="outputs/finetune_own_dataset")
parser.add_argument("--max_train_steps", type=int, default=1000)
parser.add_argument("--offline", action="store_true", help="Load local / cached files only.")
args, finetune_flags = parser.parse_known_args()

if args.images is None:  # a tiny synthetic folder, laid out as yours would be
    synthetic, args.images = make_synthetic_dataset(num_images=16, image_size=64), Path(args.data_dir, "files/images")
    for column in ("image", "label"):
        (args.images.parent / f"{column}s").mkdir(parents=True, exist_ok=True)
        for number, picture in enumerate(synthetic[column]):
            picture.save(args.images.parent / f"{column}s" / f"{number:03d}.png")
    (args.images.parent / "classes.txt").write_text("\n".join(get_class_names(synthetic)) + "\n")
images = sorted(p for p in Path(args.images).iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
labels = [Path(args.labels or Path(args.images).parent / "labels", f"{p.stem}.png") for p in images]
if not images or not all(p.is_file() for p in labels):
    parser.error(f"Each image needs a label map of its stem; missing: {[str(p) for p in labels if not p.is_file()]}")
names = load_vocabulary(str(args.classes or Path(args.images).parent / "classes.txt"))
info = dataset_info_with_class_names(names, "My dataset.", Features({"image": Image(), "label": Image()}))
columns, dataset_dir = {"image": list(map(str, images)), "label": list(map(str, labels))}, f"{args.data_dir}/dataset"
DatasetDict(train=Dataset.from_dict(columns, info.features, info)).save_to_disk(dataset_dir)  # class names in info

metrics = finetune.main([
    "--model_name_or_path", args.model, "--dataset_path", dataset_dir, "--output_dir", args.output_dir,
    "--max_train_steps", str(args.max_train_steps), "--proposal_generator", args.proposals, *finetune_flags,
] + ["--offline"] * args.offline)  # fmt: skip
print(f"Saved {args.output_dir} after {metrics['train_steps']} steps (loss {metrics['train_loss']:.4f})")
