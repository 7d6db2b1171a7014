"""Convert a checkpoint of the authors' released MAFT models (a PyTorch .pth whose fine-tuned CLIP image encoder uses
OpenAI CLIP names) into a MAFT checkpoint directory (safetensors, config, processor files).

    python scripts/convert_official_checkpoint.py \\
        --checkpoint maft_vitb16_coco_stuff.pth --clip openai/clip-vit-base-patch16 --output_dir maft-vitb16

The fine-tuned image encoder's prefix inside the file (`model.IPCLIP.` in the release; the frozen copies of the
original CLIP at `model.T.` and `model.clip_adapter.clip_model.visual.` are skipped) is found automatically; the text
tower, config and tokenizer come from `--clip`, the CLIP checkpoint the model was fine-tuned from. Every
tensor of the encoder is used exactly once, shapes are checked against the CLIP config and the converted model is
compared with a forward of the source weights before anything is written. The file is read with
`torch.load(weights_only=True)`; `--unsafe_pickle` allows a full unpickle (it can run code: trusted files only).
"""

import argparse
import json
import logging
import os

from maft_hf.hub.official_checkpoint import convert_official_checkpoint, load_source_checkpoint
from maft_hf.proposals.factory import parse_proposal_options
from maft_hf.proposals.freeseg import FreeSegConfig, save_freeseg_generator

logger = logging.getLogger("maft_hf.convert_official_checkpoint")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="The released MAFT checkpoint (.pth or .safetensors).")
    parser.add_argument("--clip", required=True, help="Hub id or directory of the CLIPModel it was fine-tuned from.")
    parser.add_argument("--output_dir", required=True, help="Where to write the MAFT checkpoint.")
    parser.add_argument(
        "--freeseg_output_dir",
        default=None,
        help="Where to write the FreeSeg proposal generator the release ships in the same file (default: "
        "<output_dir>/freeseg; use it as --proposals freeseg:<folder>).",
    )
    parser.add_argument(
        "--freeseg_option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Override a FreeSeg config value the tensors do not determine (e.g. res5_dilation=2), repeatable.",
    )
    parser.add_argument(
        "--prefix",
        default=None,
        help="Prefix of the fine-tuned image encoder, e.g. model.IPCLIP. (default: found automatically).",
    )
    parser.add_argument("--mask_start_layer", type=int, default=None, help="Override the preset start layer.")
    parser.add_argument("--input_image_size", type=int, default=None, help="Override the preset input size (px).")
    parser.add_argument("--local_files_only", action="store_true", help="Do not use the network.")
    parser.add_argument(
        "--unsafe_pickle", action="store_true", help="Allow torch.load(weights_only=False): runs code from the file."
    )
    parser.add_argument("--allow_unused", action="store_true", help="Skip unknown tensors under the prefix.")
    parser.add_argument("--no_verify", action="store_true", help="Skip the forward comparison with the source.")
    parser.add_argument("--atol", type=float, default=1e-4, help="Tolerance of the forward comparison.")
    parser.add_argument("--report_json", default=None, help="Also write the conversion report to this JSON file.")
    parser.add_argument("--push_to_hub", action="store_true")
    parser.add_argument("--hub_model_id", default=None)
    parser.add_argument("--hub_token", default=None)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    overrides = parse_proposal_options(args.freeseg_option)
    unknown = sorted(set(overrides) - set(FreeSegConfig().to_dict()))
    if unknown:
        raise ValueError(f"--freeseg_option: {unknown} are not FreeSegConfig fields.")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    source = load_source_checkpoint(args.checkpoint, unsafe_pickle=args.unsafe_pickle)  # read once, used twice
    model, report = convert_official_checkpoint(
        source,
        args.clip,
        args.output_dir,
        prefix=args.prefix,
        mask_start_layer=args.mask_start_layer,
        input_image_size=args.input_image_size,
        local_files_only=args.local_files_only,
        unsafe_pickle=args.unsafe_pickle,
        allow_unused=args.allow_unused,
        verify=not args.no_verify,
        atol=args.atol,
        push_to_hub=args.push_to_hub,
        hub_model_id=args.hub_model_id,
        token=args.hub_token,
    )
    freeseg_dir = args.freeseg_output_dir or os.path.join(args.output_dir, "freeseg")
    try:
        save_freeseg_generator(source, freeseg_dir, **overrides)
        print(f"Wrote the FreeSeg proposal generator to {freeseg_dir} (use --proposals freeseg:{freeseg_dir})")
    except ValueError as err:  # the IP-CLIP part stands on its own
        logger.warning("No FreeSeg proposal generator converted: %s", err)
    if args.report_json:
        with open(args.report_json, "w") as f:
            json.dump(vars(report), f, indent=2)
    vision = model.config.vision_config
    print(report.summary())
    print(
        f"Wrote {args.output_dir}: input {vision.input_image_size}px, mask_start_layer {vision.mask_start_layer}, "
        f"{sum(p.numel() for p in model.parameters()):,} parameters"
    )
    return report
