"""Convert a CLIP checkpoint (Hub id or local dir) into a MAFT checkpoint directory with processor files, the
starting point of `maft-finetune`:

    python scripts/convert_clip_checkpoint.py --clip openai/clip-vit-base-patch16 --output_dir maft-vitb16-init
"""

import argparse
import logging

from maft_hf.hub.conversion import convert_clip_checkpoint

from .arguments import add_conversion_arguments, conversion_options, describe_checkpoint


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", required=True, help="Hub id or local directory of a transformers CLIPModel.")
    add_conversion_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    model = convert_clip_checkpoint(args.clip, args.output_dir, **conversion_options(args))
    print(describe_checkpoint(args.output_dir, model))
