"""Flag groups and checks shared by several commands."""

from __future__ import annotations


def _raise(message: str):
    raise ValueError(message)


def check_positive(args, *names: str, error=_raise) -> None:
    """Refuse a flag below 1 (None = not given) with `error(message)`: a `ValueError`, or e.g. `parser.error`."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            error(f"--{name} must be >= 1, got {value}.")


def add_hub_arguments(parser, repo_flag: str = "--hub_model_id", repo_help: str | None = None) -> None:
    parser.add_argument("--push_to_hub", action="store_true", help="Push the result to the Hugging Face Hub.")
    parser.add_argument(repo_flag, default=None, help=repo_help or "Hub repo id (default: the output folder's name).")
    parser.add_argument("--hub_token", default=None, help="Hub token (default: the cached login).")


def add_conversion_arguments(parser) -> None:
    """The flags of the commands writing a MAFT checkpoint converted from CLIP weights."""
    parser.add_argument("--output_dir", required=True, help="Where to write the MAFT checkpoint.")
    parser.add_argument("--mask_start_layer", type=int, default=None, help="Override the preset start layer.")
    parser.add_argument("--input_image_size", type=int, default=None, help="Override the preset input size (px).")
    parser.add_argument("--local_files_only", action="store_true", help="Do not use the network.")
    add_hub_arguments(parser)


def add_freeseg_option(parser) -> None:
    parser.add_argument("--freeseg_option", action="append", default=[], metavar="KEY=VALUE", help="FreeSeg setting.")


def conversion_options(args) -> dict:
    """The keyword arguments of `add_conversion_arguments`' flags for `convert_*_checkpoint`."""
    options = {key: getattr(args, key) for key in ("mask_start_layer", "input_image_size", "local_files_only")}
    return {**options, "push_to_hub": args.push_to_hub, "hub_model_id": args.hub_model_id, "token": args.hub_token}


def add_dataset_output_arguments(parser, repo_flag: str) -> None:
    """Where a converted `DatasetDict` goes: `--output_dir` and/or the Hub (see `check_dataset_output`)."""
    parser.add_argument("--output_dir", default=None, help="Where to save_to_disk the DatasetDict.")
    add_hub_arguments(parser, repo_flag, "Hub dataset repo id, e.g. `user/name`.")
    parser.add_argument("--private", action="store_true", help="Create the Hub dataset repo as private.")


def check_dataset_output(parser, args, repo_flag: str) -> None:
    if args.output_dir is None and not args.push_to_hub:
        parser.error("give --output_dir and/or --push_to_hub.")
    if args.push_to_hub and not getattr(args, repo_flag.removeprefix("--")):
        parser.error(f"--push_to_hub needs {repo_flag}.")
    check_positive(args, "max_images", error=parser.error)


def add_segmentation_arguments(parser, proposals=None, preprocessing: str | None = None) -> None:
    """Proposals, the Eq. 9 ensemble, pre-processing and the run options of `maft-segment` / `maft-evaluate`;
    `--proposals` goes into the group `proposals` when given."""
    from maft_hf.inference.semantic_map import DEFAULT_ENSEMBLE_WEIGHT

    add = parser.add_argument
    source = proposals or parser
    source.add_argument("--proposals", help="'mask2former:<ckpt>', 'oneformer:<ckpt>', 'sam:<ckpt>' or 'grid:<k>'.")
    add("--proposal_option", action="append", default=[], metavar="KEY=VALUE", help="Proposal option, repeatable.")
    add("--ensemble_weight", type=float, default=DEFAULT_ENSEMBLE_WEIGHT, help="Lambda of paper Eq. 9; 0 = off.")
    add("--ensemble_formula", choices=["paper", "released"], default="paper", help="Eq. 9 as written or as released.")
    add("--preprocessing", choices=["direct", "released"], default=preprocessing, help="'released': the authors' path.")
    add("--batch_size", type=int, default=4, help="Images per MAFT forward pass (per process).")
    add("--offline", action="store_true", help="Use local files and the Hub cache only.")
    add("--cache_dir", default=None, help="Directory caching text classifiers between runs.")
    add("--log_level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def check_segmentation_args(args) -> None:
    check_positive(args, "batch_size")
    if not 0.0 <= args.ensemble_weight <= 1.0:
        raise ValueError(f"--ensemble_weight must lie in [0, 1] (0 = off), got {args.ensemble_weight}.")
    if args.streaming and not args.dataset_name:
        raise ValueError("--streaming applies to --dataset_name only.")


def describe_checkpoint(output_dir, model) -> str:
    """The line a conversion prints about the checkpoint it wrote."""
    vision = model.config.vision_config
    return (
        f"Wrote {output_dir}: input {vision.input_image_size}px, mask_start_layer {vision.mask_start_layer}, "
        f"{sum(p.numel() for p in model.parameters()):,} parameters"
    )
