"""Mask-aware fine-tuning (MAFT, paper section 4.2) of a CLIP / MAFT checkpoint with Accelerate.

Only the image encoder trains (by default the released set: attention and layer norms); the text classifier is
built once from the frozen text tower, proposals come from a frozen proposal generator (or a precomputed column),
and a frozen copy of the starting model is the self-distillation teacher. Defaults are the released recipe
(DESIGN.md section 2): AdamW lr 1e-5, weight decay 1e-4 (0 on norms), gradient clipping 0.01 (full model), poly
schedule (power 0.9), 1000 steps, global batch 16, 640 px crops, distillation weight 0.1.

Single process (CPU or one GPU):

    accelerate launch scripts/finetune.py \\
        --model_name_or_path ./maft-vitb16-init --dataset_path ./coco_stuff_maft \\
        --proposal_generator mask2former:facebook/mask2former-swin-base-coco-panoptic \\
        --per_device_train_batch_size 16 --output_dir ./maft-vitb16-coco

Several processes: the global batch is `per_device_train_batch_size * num_processes *
gradient_accumulation_steps` (e.g. `--num_processes 4 --per_device_train_batch_size 4` for the released 16). On
CPU use `accelerate launch --multi_gpu --num_processes 2 scripts/finetune.py --cpu ...` (gloo); `accelerate launch
--cpu --num_processes 2` silently starts one process.

A smoke run on the shipped synthetic dataset with a tiny random model (seconds, offline):

    python -c "from maft_hf.data import save_synthetic_dataset; save_synthetic_dataset('synthetic', 64, 16)"
    python -c "from maft_hf.testing import build_tiny_checkpoint; build_tiny_checkpoint('tiny-maft')"
    accelerate launch --cpu --num_processes 1 scripts/finetune.py --cpu --offline \\
        --model_name_or_path tiny-maft --dataset_path synthetic --eval_split test --proposal_generator grid:4 \\
        --crop_size 64 --short_side 64 --per_device_train_batch_size 4 --learning_rate 1e-3 --max_train_steps 40 \\
        --output_dir tiny-maft-finetuned
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from contextlib import nullcontext

import torch
from accelerate.logging import get_logger

logger = get_logger("maft_hf.finetune")  # logs on the main process only (after the Accelerator exists)


def _short_side(value: str):
    from maft_hf.data.transforms import RELEASED_SHORT_SIDES

    if value == "released":
        return tuple(RELEASED_SHORT_SIDES)
    sides = tuple(int(v) for v in value.split(",") if v.strip())
    if not sides or min(sides) < 1:
        raise argparse.ArgumentTypeError(f"--short_side must be 'released', an int or a comma list, got {value!r}.")
    return sides[0] if len(sides) == 1 else sides


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = parser.add_argument_group("model")
    model.add_argument(
        "--model_name_or_path",
        required=True,
        help="Hub id or local directory of a MAFT checkpoint or of a plain transformers CLIP checkpoint (converted in "
        "memory with the MAFT preset: 480 px input, mask start layer 8 for ViT-B).",
    )
    model.add_argument(
        "--freeze_policy",
        default="released",
        choices=["released", "paper", "all"],
        help="Which vision parameters train: 'released' (attention + layer norms, the authors' code), 'paper' (Tab. "
        "4d best row), 'all'. The text tower is always frozen.",
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset_name", default=None, help="Dataset on the Hub (or a local data directory) for datasets.load_dataset."
    )
    data.add_argument("--dataset_config_name", default=None, help="Configuration name for datasets.load_dataset.")
    data.add_argument(
        "--dataset_path", default=None, help="Directory written by Dataset(Dict).save_to_disk (load_from_disk)."
    )
    data.add_argument("--train_split", default="train", help="Split to train on.")
    data.add_argument(
        "--eval_split",
        default=None,
        help="Held-out split for the rank-correlation diagnostic (before and after training; see "
        "maft_hf.training.loop.rank_correlation_eval). Off by default.",
    )
    data.add_argument("--max_eval_samples", type=int, default=None, help="Use the first N examples of --eval_split.")
    data.add_argument("--max_train_samples", type=int, default=None, help="Train on the first N examples (debugging).")
    data.add_argument("--image_column", default="image", help="Column holding the images.")
    data.add_argument("--label_column", default="label", help="Column holding the semantic label maps.")
    data.add_argument(
        "--vocabulary",
        default=None,
        help="Class names of the label ids: a shipped vocabulary name (e.g. coco_stuff_171), a .txt file (one class "
        "per line, synonyms as 'building, edifice') or a comma-separated list. Default: the class names stored in the "
        "dataset info (coco_stuff_171 with --label_mapping coco_stuff when none are stored).",
    )
    data.add_argument(
        "--label_mapping",
        default="none",
        choices=["none", "coco_stuff"],
        help="'coco_stuff': labels are raw stuffthingmaps values (COCO id - 1) mapped to the 171 contiguous ids; "
        "'none': labels already index the vocabulary.",
    )
    data.add_argument("--ignore_index", type=int, default=255, help="Label value of unlabelled pixels.")
    data.add_argument(
        "--zero_shot",
        action="store_true",
        help="Zero-shot setting (paper Tab. 1): pixels of --unseen_classes are ignored and those classes are left out "
        "of the training vocabulary. Default: open-vocabulary training on every class (the released setting).",
    )
    data.add_argument(
        "--unseen_classes",
        default="coco_stuff_unseen_15",
        help="With --zero_shot: the unseen classes (shipped name, file or comma list). Default: the 15 of COCO-Stuff.",
    )
    data.add_argument(
        "--max_checked_examples",
        type=int,
        default=None,
        help="Check only the first N training examples before training (default: all; the check decodes each label "
        "map once, spread over the processes).",
    )
    data.add_argument("--dataloader_num_workers", type=int, default=0, help="DataLoader worker processes.")
    data.add_argument("--cache_dir", default=None, help="Cache directory for datasets and models from the Hub.")
    aug = parser.add_argument_group("augmentation and proposals")
    aug.add_argument("--crop_size", type=int, default=640, help="Square training crop = proposal/IoU resolution (640).")
    aug.add_argument(
        "--short_side",
        type=_short_side,
        default=640,
        help="Short side after resizing: an int (640), a comma list to draw from, or 'released' (320..960 step 64).",
    )
    aug.add_argument("--max_size", type=int, default=2560, help="Cap on the long side after resizing.")
    aug.add_argument("--flip_prob", type=float, default=0.5, help="Probability of a horizontal flip.")
    aug.add_argument(
        "--proposal_generator",
        default=None,
        help="Frozen proposal source run on each training crop: 'mask2former:<id_or_path>', 'oneformer:<...>', "
        "'universal:<...>', 'sam:<...>' or 'grid:<k>'.",
    )
    aug.add_argument(
        "--proposal_column",
        default=None,
        help="Column of precomputed proposals instead: per example a stack (N, H, W) of masks at the image size (bool, "
        "0/1, 0..255 or probabilities); augmented with the image.",
    )
    aug.add_argument("--num_proposals", type=int, default=None, help="Keep the top-N queries of a universal generator.")
    optim = parser.add_argument_group("optimisation")
    optim.add_argument(
        "--per_device_train_batch_size",
        type=int,
        default=16,
        help="Images per process and micro-step. Global batch = this * num_processes * gradient_accumulation_steps "
        "(released: 16).",
    )
    optim.add_argument("--gradient_accumulation_steps", type=int, default=1, help="Micro-steps per optimizer step.")
    optim.add_argument("--learning_rate", type=float, default=1e-5, help="AdamW learning rate (released 1e-5).")
    optim.add_argument("--weight_decay", type=float, default=1e-4, help="AdamW weight decay; norms get 0 (released).")
    optim.add_argument("--max_grad_norm", type=float, default=0.01, help="Full-model gradient clipping (0 = off).")
    optim.add_argument("--max_train_steps", type=int, default=1000, help="Optimizer steps (released: 1000).")
    optim.add_argument("--lr_power", type=float, default=0.9, help="Power of the poly schedule (detectron2: 0.9).")
    optim.add_argument("--lr_warmup_steps", type=int, default=0, help="Linear warmup steps (released: 0).")
    optim.add_argument(
        "--distillation_weight",
        type=float,
        default=0.1,
        help="lambda of L = L_ma + lambda * L_dis. 0.1 is the released value; the paper text says 1.0. 0 disables the "
        "teacher.",
    )
    optim.add_argument(
        "--mixed_precision",
        default="no",
        choices=["no", "fp16", "bf16"],
        help="Passed to Accelerator (the release trains in fp32).",
    )
    optim.add_argument("--seed", type=int, default=0, help="Seed of the data order, augmentation and initial RNG.")
    run = parser.add_argument_group("run, checkpoints, tracking, hub")
    run.add_argument("--output_dir", required=True, help="Where checkpoints, the final model and logs go.")
    run.add_argument(
        "--checkpointing_steps",
        type=int,
        default=None,
        help="Save the full training state every K optimizer steps to output_dir/step_K (atomically).",
    )
    run.add_argument("--checkpoints_total_limit", type=int, default=None, help="Keep only the newest N checkpoints.")
    run.add_argument(
        "--resume_from_checkpoint",
        default=None,
        help="A step_K checkpoint directory, or 'latest' (the newest in output_dir; starts fresh when there is none).",
    )
    run.add_argument("--with_tracking", action="store_true", help="Log the loss terms and LR with accelerate trackers.")
    run.add_argument(
        "--report_to",
        default="tensorboard",
        help="Trackers for --with_tracking: 'tensorboard' (default), 'wandb', 'all', ... (comma list allowed).",
    )
    run.add_argument("--push_to_hub", action="store_true", help="Upload the final model, processor and card.")
    run.add_argument("--hub_model_id", default=None, help="Repository id (default: the output_dir name).")
    run.add_argument("--hub_token", default=None, help="Token for the Hub (default: the logged-in token).")
    run.add_argument("--hub_private_repo", action="store_true", help="Create the repository as private.")
    run.add_argument("--cpu", action="store_true", help="Run on CPU (Accelerator(cpu=True)), also with N processes.")
    run.add_argument(
        "--offline",
        action="store_true",
        help="Never use the network: HF_HUB_OFFLINE / HF_DATASETS_OFFLINE and local_files_only=True everywhere.",
    )
    args = parser.parse_args(argv)

    if (args.dataset_name is None) == (args.dataset_path is None):
        parser.error("Give exactly one of --dataset_name (datasets.load_dataset) and --dataset_path (load_from_disk).")
    if (args.proposal_generator is None) == (args.proposal_column is None):
        parser.error("Give exactly one of --proposal_generator and --proposal_column.")
    if args.push_to_hub and args.offline:
        parser.error("--push_to_hub needs the network; it cannot be combined with --offline.")
    for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "max_train_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}.")
    if args.checkpointing_steps is not None and args.checkpointing_steps < 1:
        parser.error(f"--checkpointing_steps must be >= 1, got {args.checkpointing_steps}.")
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}.")
    return args


def enable_offline_mode() -> None:
    """HF_HUB_OFFLINE / HF_DATASETS_OFFLINE semantics, also for libraries imported before this call."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    flags = (
        ("huggingface_hub.constants", "HF_HUB_OFFLINE"),
        ("datasets.config", "HF_HUB_OFFLINE"),
        ("datasets.config", "HF_DATASETS_OFFLINE"),
    )
    for module_name, attribute in flags:
        module = sys.modules.get(module_name)
        if module is not None and hasattr(module, attribute):
            setattr(module, attribute, True)


def load_raw_dataset(args):
    import datasets

    if args.dataset_path is not None:
        return datasets.load_from_disk(args.dataset_path)
    return datasets.load_dataset(args.dataset_name, args.dataset_config_name, cache_dir=args.cache_dir)


def _check_shard(accelerator, check) -> None:
    """Run `check(process_index, num_processes)` on every process; raise the first error on all of them."""
    from accelerate.utils import gather_object

    try:
        check(accelerator.process_index, accelerator.num_processes)
        error = None
    except ValueError as err:
        error = str(err)
    errors = [e for e in gather_object([error]) if e] if accelerator.num_processes > 1 else [e for e in [error] if e]
    if errors:
        raise ValueError(errors[0])


def _tracker_config(args) -> dict:
    config = {}
    for key, value in vars(args).items():
        if key == "hub_token":
            continue
        config[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return config


def push_to_hub(output_dir: str, repo_id: str, token: str | None = None, private: bool = False) -> str:
    """Create (or reuse) the model repository and upload the final model folder, without checkpoints.

    Returns:
        The repository id.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    repo_url = api.create_repo(repo_id, exist_ok=True, private=private, token=token)
    repo_id = getattr(repo_url, "repo_id", None) or repo_id
    api.upload_folder(
        repo_id=repo_id,
        folder_path=output_dir,
        commit_message="MAFT fine-tuning: final model",
        token=token,
        ignore_patterns=["step_*", ".tmp_*", ".old_*", "logs/*", "logs/**"],
    )
    return repo_id


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.offline:
        enable_offline_mode()
    local_files_only = True if args.offline else None

    import datasets
    import transformers
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed
    from tqdm.auto import tqdm

    import maft_hf  # noqa: F401  (registers the Auto classes)
    from maft_hf.inference.text_classifier import build_text_classifier
    from maft_hf.training.freezing import apply_freeze_policy, parameter_groups
    from maft_hf.training.loop import (
        LOSSES_FILE,
        RESULTS_FILE,
        AugmentationConfig,
        LabelConverter,
        MaskAwareStudent,
        StepBatchSampler,
        TrainingExamples,
        collate,
        find_latest_checkpoint,
        load_model_and_processor,
        load_training_proposal_generator,
        load_training_state,
        make_teacher,
        mask_aware_entry_count,
        poly_lr_scheduler,
        prepare_batch,
        prune_checkpoints,
        rank_correlation_eval,
        remove_stale_temporaries,
        resolve_unseen_classes,
        resolve_vocabulary,
        save_checkpoint,
        select_split,
        training_step,
        validate_training_dataset,
        write_model_card,
    )

    trackers = None
    if args.with_tracking:
        trackers = [t.strip() for t in args.report_to.split(",")] if "," in args.report_to else args.report_to
    accelerator = Accelerator(
        cpu=args.cpu,
        mixed_precision=args.mixed_precision,
        log_with=trackers,
        project_config=ProjectConfiguration(args.output_dir, logging_dir=os.path.join(args.output_dir, "logs")),
    )
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%m/%d/%Y %H:%M:%S", level=logging.INFO
    )
    logger.info(str(accelerator.state).replace("\n", " | "), main_process_only=False)
    if accelerator.is_local_main_process:
        datasets.utils.logging.set_verbosity_warning()
        transformers.utils.logging.set_verbosity_warning()
    else:
        datasets.utils.logging.set_verbosity_error()
        transformers.utils.logging.set_verbosity_error()
    set_seed(args.seed)
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
    accelerator.wait_for_everyone()

    # ---- data, vocabulary and checks (before any model is loaded) ---------------------------------------------
    raw = load_raw_dataset(args)
    train_dataset = select_split(raw, args.train_split)
    if args.max_train_samples is not None:
        train_dataset = train_dataset.select(range(min(args.max_train_samples, len(train_dataset))))
    eval_dataset = select_split(raw, args.eval_split, allow_unsplit=False) if args.eval_split else None
    if eval_dataset is not None and args.max_eval_samples is not None:
        eval_dataset = eval_dataset.select(range(min(args.max_eval_samples, len(eval_dataset))))
    class_names = resolve_vocabulary(args.vocabulary, raw, args.label_mapping)
    unseen_ids = resolve_unseen_classes(args.unseen_classes, class_names) if args.zero_shot else []
    converter = LabelConverter(class_names, args.label_mapping, unseen_ids, args.ignore_index)
    training_vocabulary = converter.training_class_names
    args.training_vocabulary = training_vocabulary
    logger.info(
        "Training vocabulary: %d classes%s",
        len(training_vocabulary),
        f" ({len(unseen_ids)} unseen classes ignored)" if unseen_ids else "",
    )
    limit = len(train_dataset)
    if args.max_checked_examples is not None:
        limit = min(args.max_checked_examples, limit)

    def check(rank, world):
        validate_training_dataset(
            train_dataset,
            args.image_column,
            args.label_column,
            converter,
            args.proposal_column,
            split=args.train_split,
            indices=range(rank, limit, world),
        )

    if len(train_dataset) == 0:  # every process raises the same error without a collective
        raise ValueError(f"Split {args.train_split!r} is empty: fine-tuning needs at least one example.")
    _check_shard(accelerator, check)
    if eval_dataset is not None:
        validate_training_dataset(
            eval_dataset,
            args.image_column,
            args.label_column,
            converter,
            args.proposal_column,
            split=args.eval_split,
            indices=range(0),
        )
    logger.info("Checked %d training examples of split %r.", limit, args.train_split)

    # ---- models ------------------------------------------------------------------------------------------------
    model, processor = load_model_and_processor(args.model_name_or_path, local_files_only=local_files_only)
    image_processor = processor.image_processor
    input_size = model.config.vision_config.input_image_size
    text_classifier = build_text_classifier(model, processor.tokenizer, training_vocabulary)
    teacher = make_teacher(model) if args.distillation_weight != 0 else None
    summary = apply_freeze_policy(model, args.freeze_policy)
    logger.info(
        "Freeze policy %r: %s trainable / %s frozen parameters.",
        args.freeze_policy,
        f"{summary['trainable']:,}",
        f"{summary['frozen']:,}",
    )
    generator = None
    if args.proposal_generator is not None:
        generator = load_training_proposal_generator(
            args.proposal_generator, local_files_only, args.num_proposals, accelerator.device
        )

    student = MaskAwareStudent(model)
    optimizer = torch.optim.AdamW(parameter_groups(model, args.weight_decay), lr=args.learning_rate)
    scheduler = poly_lr_scheduler(optimizer, args.max_train_steps, args.lr_power, args.lr_warmup_steps)
    student, optimizer = accelerator.prepare(student, optimizer)
    accelerator.register_for_checkpointing(scheduler)  # stepped once per optimizer step, by us
    text_classifier = text_classifier.to(accelerator.device)
    if teacher is not None:
        teacher.to(accelerator.device)

    metrics = {}

    def evaluate(eval_model, name):
        if eval_dataset is None:
            return
        if accelerator.is_main_process:
            result = rank_correlation_eval(
                eval_model,
                eval_dataset,
                text_classifier,
                generator,
                label_converter=converter,
                image_column=args.image_column,
                label_column=args.label_column,
                proposal_column=args.proposal_column,
                image_mean=image_processor.image_mean,
                image_std=image_processor.image_std,
                ignore_index=args.ignore_index,
            )
            metrics[f"rank_correlation_{name}"] = result["spearman"]
            metrics[f"eval_mask_aware_loss_{name}"] = result["mask_aware_loss"]
            logger.info(
                "Held-out %s (%s model, %d images): rank correlation %.4f over %d (image, class) rows, mask-aware "
                "loss %.5f",
                args.eval_split,
                name,
                result["num_images"],
                result["spearman"],
                result["num_rows"],
                result["mask_aware_loss"],
            )
        accelerator.wait_for_everyone()

    evaluate(accelerator.unwrap_model(student).model, "start")  # the starting weights, before any resume

    # ---- resume ------------------------------------------------------------------------------------------------
    global_batch = args.per_device_train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    args.global_batch_size = global_batch
    start_step, history = 0, []
    if accelerator.is_main_process:
        remove_stale_temporaries(args.output_dir)
    accelerator.wait_for_everyone()
    if args.resume_from_checkpoint:
        path = args.resume_from_checkpoint
        if path == "latest":
            path = find_latest_checkpoint(args.output_dir)
            if path is None:
                logger.warning("No checkpoint in %s: starting from step 0.", args.output_dir)
        if path is not None:
            state = load_training_state(path)
            for key in ("global_batch_size", "seed"):
                if state.get(key) != getattr(args, key):
                    logger.warning(
                        "Checkpoint %s was written with %s=%s, this run has %s: the data order differs from the "
                        "interrupted run.",
                        path,
                        key,
                        state.get(key),
                        getattr(args, key),
                    )
            accelerator.load_state(path)
            start_step, history = int(state["completed_steps"]), list(state.get("history", []))
            logger.info("Resumed from %s at step %d.", path, start_step)

    examples = TrainingExamples(
        train_dataset,
        converter,
        AugmentationConfig(args.crop_size, args.short_side, args.max_size, args.flip_prob),
        seed=args.seed,
        image_column=args.image_column,
        label_column=args.label_column,
        proposal_column=args.proposal_column,
    )
    sampler = StepBatchSampler(
        len(examples),
        args.per_device_train_batch_size,
        args.max_train_steps,
        accelerator.num_processes,
        accelerator.process_index,
        args.gradient_accumulation_steps,
        min(start_step, args.max_train_steps),
        args.seed,
    )
    loader = torch.utils.data.DataLoader(
        examples, batch_sampler=sampler, collate_fn=collate, num_workers=args.dataloader_num_workers
    )

    if args.with_tracking:
        accelerator.init_trackers("maft_finetune", _tracker_config(args))

    trainable = [p for p in student.parameters() if p.requires_grad]
    num_classes = len(training_vocabulary)
    logger.info("***** Running MAFT fine-tuning *****")
    logger.info("  Examples = %d, vocabulary = %d classes", len(examples), num_classes)
    logger.info(
        "  Per-device batch = %d, processes = %d, accumulation = %d, global batch = %d",
        args.per_device_train_batch_size,
        accelerator.num_processes,
        args.gradient_accumulation_steps,
        global_batch,
    )
    logger.info("  Optimizer steps = %d (starting at %d)", args.max_train_steps, start_step)
    progress = tqdm(
        range(args.max_train_steps),
        initial=start_step,
        disable=not accelerator.is_local_main_process,
        desc="MAFT",
        dynamic_ncols=True,
    )
    student.train()
    batches = iter(loader)
    started = time.time()
    for step in range(start_step, args.max_train_steps):
        micro_batches = [
            prepare_batch(
                next(batches),
                input_size,
                generator,
                image_processor.image_mean,
                image_processor.image_std,
                accelerator.device,
            )
            for _ in range(args.gradient_accumulation_steps)
        ]
        local_count = sum(
            mask_aware_entry_count(b["labels"], num_classes, b["proposal_valid_mask"], args.ignore_index)
            for b in micro_batches
        )
        global_count = accelerator.reduce(torch.as_tensor(local_count, device=accelerator.device).double(), "sum")
        mask_aware_normalizer = max(float(global_count), 1.0)
        distillation_normalizer = float(global_batch * num_classes)
        sums = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
        for index, batch in enumerate(micro_batches):
            last = index == len(micro_batches) - 1
            with nullcontext() if last else accelerator.no_sync(student):
                out = training_step(
                    student,
                    teacher,
                    batch,
                    text_classifier,
                    args.distillation_weight,
                    ignore_index=args.ignore_index,
                    mask_aware_normalizer=mask_aware_normalizer,
                    distillation_normalizer=distillation_normalizer,
                    loss_scale=accelerator.num_processes,
                    autocast=accelerator.autocast,
                )
                accelerator.backward(out.loss)
            sums += torch.stack([out.mask_aware_sum.double(), out.distillation_sum.double()])
        if args.max_grad_norm > 0:
            accelerator.clip_grad_norm_(trainable, args.max_grad_norm)
        learning_rate = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        sums = accelerator.reduce(sums, "sum")
        mask_aware = float(sums[0]) / mask_aware_normalizer
        distillation = float(sums[1]) / distillation_normalizer if teacher is not None else None
        total = mask_aware + (args.distillation_weight * distillation if distillation is not None else 0.0)
        record = {
            "step": step + 1,
            "loss": total,
            "mask_aware_loss": mask_aware,
            "distillation_loss": distillation,
            "learning_rate": learning_rate,
        }
        history.append(record)
        progress.update(1)
        progress.set_postfix(
            loss=f"{total:.4f}",
            ma=f"{mask_aware:.4f}",
            dis="-" if distillation is None else f"{distillation:.2e}",
            lr=f"{learning_rate:.2e}",
        )
        if args.with_tracking:
            logged = {f"train/{k}": v for k, v in record.items() if k != "step" and v is not None}
            accelerator.log(logged, step=step + 1)
        if not math.isfinite(total):
            raise RuntimeError(f"The loss is {total} at step {step + 1}; stopping (try a lower --learning_rate).")

        if args.checkpointing_steps and (step + 1) % args.checkpointing_steps == 0:
            state = {
                "completed_steps": step + 1,
                "global_batch_size": global_batch,
                "seed": args.seed,
                "max_train_steps": args.max_train_steps,
                "history": history,
            }
            path = save_checkpoint(accelerator, args.output_dir, step + 1, state)
            if accelerator.is_main_process:
                prune_checkpoints(args.output_dir, args.checkpoints_total_limit)
            logger.info("Saved checkpoint %s", path)
    progress.close()
    logger.info("Training took %.1f s.", time.time() - started)

    # ---- final model --------------------------------------------------------------------------------------------
    accelerator.wait_for_everyone()
    final_model = accelerator.unwrap_model(student).model
    evaluate(final_model, "final")
    if history:
        metrics["train_loss"] = history[-1]["loss"]
        metrics["train_mask_aware_loss"] = history[-1]["mask_aware_loss"]
    metrics["train_steps"] = args.max_train_steps
    metrics["num_processes"] = accelerator.num_processes
    metrics["global_batch_size"] = global_batch
    if accelerator.is_main_process:
        final_model.save_pretrained(args.output_dir)
        processor.save_pretrained(args.output_dir)
        with open(os.path.join(args.output_dir, LOSSES_FILE), "w") as f:
            json.dump(history, f, indent=1)
        with open(os.path.join(args.output_dir, RESULTS_FILE), "w") as f:
            json.dump(metrics, f, indent=2)
        if args.push_to_hub and args.hub_model_id is None:
            args.hub_model_id = os.path.basename(os.path.abspath(args.output_dir))
        write_model_card(args.output_dir, args, metrics)
        if args.push_to_hub:
            repo_id = push_to_hub(args.output_dir, args.hub_model_id, args.hub_token, args.hub_private_repo)
            logger.info("Uploaded %s to %s", args.output_dir, repo_id)
    accelerator.wait_for_everyone()
    if args.with_tracking:
        accelerator.end_training()
    return metrics
