"""Write the Hub model card (README.md) of a MAFT checkpoint, from `src/maft_hf/assets/model_card_template.md`.

    python scripts/make_model_card.py --checkpoint_dir maft-vitb16 --model_id your-org/maft-vitb16 \\
        --results results.json --training '{"max_train_steps": 1000, "total_batch_size": 16}'

Without `--checkpoint_dir` or `--output` the card goes to stdout. `--results`, `--training` and `--compute` take a
JSON file or a JSON string (`--compute` also plain text). Results are percentages per benchmark, e.g.
`{"ade20k_150": {"mIoU": 29.3}}`; nothing is ever filled in from the paper.
"""

import argparse
import json
import math
import os
import sys
from pathlib import Path

from maft_hf.hub.model_card import BACKBONES, BASE_MODELS, SETTINGS, make_model_card

# flags given to make_model_card as they are
PASSED_ON = (
    "datasets setting backbone input_image_size mask_start_layer evaluation_proposals license model_name".split()
)


def read_json(value, name, allow_text=False):
    if value is None:
        return None
    if os.path.isfile(value):
        with open(value) as f:
            return json.load(f)
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        if allow_text:
            return value
        raise SystemExit(f"--{name} must be a JSON file or a JSON string, got {value!r}.") from None


def count_parameters(checkpoint_dir) -> int | None:
    """Number of parameters in the checkpoint's safetensors files (from their headers)."""
    from safetensors import safe_open

    files = sorted(Path(checkpoint_dir).glob("*.safetensors"))
    total = 0
    for path in files:
        with safe_open(path, framework="pt") as f:
            total += sum(math.prod(f.get_slice(key).get_shape()) for key in f.keys())
    return total if files else None


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--model_id", required=True, help="Hub id shown in the usage snippet (your-org/name).")
    add("--base_model", default=None, help="CLIP checkpoint it was fine-tuned from.")
    add("--checkpoint_dir", default=None, help="Read the config from it and write README.md into it.")
    add("--output", default=None, help="Write the card here ('-' for stdout).")
    add("--results", default=None, help="Measured results (JSON file or string), in percent.")
    add("--training", default=None, help="Hyper-parameters of the run (JSON file or string).")
    add("--compute", default=None, help="Hardware / time used (JSON or text).")
    add("--datasets", nargs="*", default=None, help="Training datasets for the metadata.")
    add("--setting", choices=SETTINGS, default="open_vocabulary")
    add("--backbone", choices=sorted(BACKBONES), default=None, help="Default: inferred.")
    add("--input_image_size", type=int, default=None)
    add("--mask_start_layer", type=int, default=None)
    add("--evaluation_proposals", default=None, help="Proposal generator of the results.")
    add("--license", default="apache-2.0")
    add("--model_name", default=None)
    add("--template", default=None, help="Template file (default: the packaged one).")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    options = {name: getattr(args, name) for name in PASSED_ON}
    if args.checkpoint_dir is not None:
        from maft_hf.model.configuration_maft import MAFTConfig

        options["config"] = MAFTConfig.from_pretrained(args.checkpoint_dir)
        options["num_parameters"] = count_parameters(args.checkpoint_dir)
    base_model = args.base_model or BASE_MODELS[args.backbone or "vit-b16"]
    results, training = read_json(args.results, "results"), read_json(args.training, "training")
    compute = read_json(args.compute, "compute", allow_text=True)
    card = make_model_card(
        args.model_id, base_model, results, training, compute=compute, template_path=args.template, **options
    )
    output = args.output
    if output is None and args.checkpoint_dir is not None:
        output = os.path.join(args.checkpoint_dir, "README.md")
    if output is None or output == "-":
        sys.stdout.write(str(card))
    else:
        card.save(output)
        print(f"Wrote {output}", file=sys.stderr)
    return card
