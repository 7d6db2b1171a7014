"""Fine-tune MAFT with transformers' `Trainer`: given `labels`, the model's forward returns the mask-aware loss
(paper Eq. 5-7), so only a collator is needed. Tiny random model, synthetic data, colour-cluster proposals, CPU.

    python examples/trainer_finetune.py [output_dir] [steps]   # writes output_dir/start and output_dir/model
"""

import sys
from pathlib import Path

import numpy as np
import torch
from transformers import AutoProcessor, Trainer, TrainingArguments

from maft_hf import MaskAwareCLIPModel, apply_freeze_policy, load_proposal_generator, pad_proposals
from maft_hf.data import get_class_names, make_synthetic_dataset
from maft_hf.testing import build_tiny_checkpoint

out = Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/trainer_finetune")
start = build_tiny_checkpoint(out / "start", initializer_range=0.2)  # or a MAFT / converted CLIP checkpoint
model, processor = MaskAwareCLIPModel.from_pretrained(start), AutoProcessor.from_pretrained(start)
apply_freeze_policy(model, "released")  # the image encoder trains, the text tower stays frozen
dataset, proposals = make_synthetic_dataset(num_images=16, image_size=64), load_proposal_generator("kmeans:6")
texts = processor.tokenizer([f"a photo of a {c}." for c in get_class_names(dataset)], padding=True, return_tensors="pt")


def collate(examples):  # pixels, padded proposals, label maps (255 = unlabelled) and the class prompts
    images = [example["image"].convert("RGB") for example in examples]
    masks, valid = pad_proposals([item.masks for item in proposals(images)])
    labels = torch.stack([torch.as_tensor(np.array(example["label"]), dtype=torch.long) for example in examples])
    pixels = processor(images=images)["pixel_values"]
    return dict(pixel_values=pixels, proposal_masks=masks, proposal_valid_mask=valid, labels=labels, **texts)


steps = int(sys.argv[2]) if len(sys.argv) > 2 else 20
options = dict(per_device_train_batch_size=4, learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to=[])
args = TrainingArguments(out, max_steps=steps, use_cpu=True, remove_unused_columns=False, seed=0, **options)
Trainer(model=model, args=args, train_dataset=dataset, data_collator=collate).train()  # collate reads image, label
model.save_pretrained(out / "model")
processor.save_pretrained(out / "model")
