"""Convert a CLIP checkpoint (Hub id or local dir) into a MAFT checkpoint directory with processor files.

    python scripts/convert_clip_checkpoint.py --clip openai/clip-vit-base-patch16 --output_dir maft-vitb16-init

The result is the starting point of `scripts/finetune.py` and loads with `AutoModel.from_pretrained(output_dir)`.
"""

import argparse
import logging

from maft_hf.hub.conversion import convert_clip_checkpoint


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", required=True, help="Hub id or local directory of a transformers CLIPModel.")
    parser.add_argument("--output_dir", required=True, help="Where to write the MAFT checkpoint.")
    parser.add_argument("--mask_start_layer", type=int, default=None, help="Override the preset start layer.")
    parser.add_argument("--input_image_size", type=int, default=None, help="Override the preset input size (px).")
    parser.add_argument("--local_files_only", action="store_true", help="Do not use the network.")
    parser.add_argument("--push_to_hub", action="store_true")
    parser.add_argument("--hub_model_id", default=None)
    parser.add_argument("--hub_token", default=None)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    model = convert_clip_checkpoint(
        args.clip,
        args.output_dir,
        mask_start_layer=args.mask_start_layer,
        input_image_size=args.input_image_size,
        local_files_only=args.local_files_only,
        push_to_hub=args.push_to_hub,
        hub_model_id=args.hub_model_id,
        token=args.hub_token,
    )
    vision = model.config.vision_config
    print(
        f"Wrote {args.output_dir}: input {vision.input_image_size}px, mask_start_layer {vision.mask_start_layer}, "
        f"{sum(p.numel() for p in model.parameters()):,} parameters"
    )
