"""Convert a checkpoint of the authors' released MAFT models (a PyTorch .pth whose fine-tuned CLIP image encoder uses
OpenAI CLIP names) into a MAFT checkpoint directory, and the FreeSeg proposal generator it ships into another one
(docs/hub.md, docs/freeseg.md):

    python scripts/convert_official_checkpoint.py \\
        --checkpoint maft_vitb16_coco_stuff.pth --clip openai/clip-vit-base-patch16 --output_dir maft-vitb16

The text tower, config and tokenizer come from `--clip`, the CLIP checkpoint the model was fine-tuned from. Shapes
are checked and the converted model is compared with a forward of the source weights before anything is written.
`--freeseg_option KEY=VALUE` (repeatable) sets a FreeSeg config value the tensors do not determine (res5_dilation=2).
"""

import argparse
import json
import logging
import os

from maft_hf.hub.official_checkpoint import convert_official_checkpoint, load_source_checkpoint
from maft_hf.proposals.factory import parse_proposal_options
from maft_hf.proposals.freeseg import FreeSegConfig, save_freeseg_generator

from .arguments import add_conversion_arguments, add_freeseg_option, conversion_options, describe_checkpoint

logger = logging.getLogger("maft_hf.convert_official_checkpoint")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--checkpoint", required=True, help="The released MAFT checkpoint (.pth or .safetensors).")
    add("--clip", required=True, help="Hub id or directory of the CLIPModel it was fine-tuned from.")
    add(
        "--freeseg_output_dir",
        default=None,
        help="Where to write its FreeSeg generator (default: <output_dir>/freeseg).",
    )
    add_freeseg_option(parser)
    add("--prefix", default=None, help="Prefix of the fine-tuned image encoder (default: found automatically).")
    add("--unsafe_pickle", action="store_true", help="Allow torch.load(weights_only=False): runs code from the file.")
    add("--allow_unused", action="store_true", help="Skip unknown tensors under the prefix.")
    add("--no_verify", action="store_true", help="Skip the forward comparison with the source.")
    add("--atol", type=float, default=1e-4, help="Tolerance of the forward comparison.")
    add("--report_json", default=None, help="Also write the conversion report to this JSON file.")
    add_conversion_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    overrides = parse_proposal_options(args.freeseg_option)
    unknown = sorted(set(overrides) - set(FreeSegConfig().to_dict()))
    if unknown:
        raise ValueError(f"--freeseg_option: {unknown} are not FreeSegConfig fields.")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    source = load_source_checkpoint(args.checkpoint, unsafe_pickle=args.unsafe_pickle)  # read once, used twice
    options = {key: getattr(args, key) for key in ("prefix", "unsafe_pickle", "allow_unused", "atol")}
    options.update(conversion_options(args), verify=not args.no_verify)
    model, report = convert_official_checkpoint(source, args.clip, args.output_dir, **options)
    freeseg_dir = args.freeseg_output_dir or os.path.join(args.output_dir, "freeseg")
    try:
        save_freeseg_generator(source, freeseg_dir, **overrides)
        print(f"Wrote the FreeSeg proposal generator to {freeseg_dir} (use --proposals freeseg:{freeseg_dir})")
    except ValueError as err:  # the IP-CLIP part stands on its own
        logger.warning("No FreeSeg proposal generator converted: %s", err)
    if args.report_json:
        with open(args.report_json, "w") as f:
            json.dump(vars(report), f, indent=2)
    print(report.summary())
    print(describe_checkpoint(args.output_dir, model))
    return report
