"""Mask-aware fine-tuning (MAFT, paper section 4.2) of a CLIP / MAFT checkpoint with Accelerate.

Only the image encoder trains (by default the released set: attention and layer norms); the text classifier is built
once from the frozen text tower, proposals come from a frozen generator (or a precomputed column), and a frozen copy
of the starting model is the self-distillation teacher. Defaults are the released recipe: AdamW lr 1e-5, weight decay
1e-4 (0 on norms), gradient clipping 0.01, poly schedule, 1000 steps, global batch 16, 640 px crops, distillation
weight 0.1. `--freeze_policy`: 'released' (attention + layer norms), 'paper' (Tab. 4d), 'all'; `--loss_normalization`
'global' (means over the global batch: any split gives the same step) or 'per_device' (the release). docs/training.md.

    accelerate launch scripts/finetune.py \\
        --model_name_or_path ./maft-vitb16-init --dataset_path ./coco_stuff_maft \\
        --proposal_generator mask2former:facebook/mask2former-swin-base-coco-panoptic \\
        --per_device_train_batch_size 16 --output_dir ./maft-vitb16-coco

Global batch = per_device_train_batch_size * num_processes * gradient_accumulation_steps. Several CPU processes:
`accelerate launch --multi_gpu --num_processes 2 scripts/finetune.py --cpu ...` (gloo).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from contextlib import nullcontext
from types import SimpleNamespace

import torch
from accelerate.logging import get_logger

from maft_hf.training.data import COLOR_JITTERS, LABEL_MAPPINGS
from maft_hf.training.freezing import FREEZE_POLICIES
from maft_hf.training.objective import LOSS_NORMALIZATIONS

from .arguments import add_hub_arguments, check_positive

logger = get_logger("maft_hf.finetune")  # logs on the main process only (after the Accelerator exists)
STREAM_CHECKED_EXAMPLES = 100  # --streaming: examples checked (and held-out examples read) by default
UPLOAD_IGNORE = ["step_*", ".tmp_*", ".old_*", "logs/*", "logs/**"]  # checkpoints and logs stay local


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
    group = parser.add_argument_group("model and data")
    add = group.add_argument
    add("--model_name_or_path", required=True, help="Hub id or directory of a MAFT or a plain CLIP checkpoint.")
    add("--freeze_policy", default="released", choices=list(FREEZE_POLICIES), help="Trained vision parameters.")
    dataset = group.add_mutually_exclusive_group(required=True)
    dataset.add_argument("--dataset_name", help="Hub dataset or local data directory (load_dataset).")
    dataset.add_argument("--dataset_path", help="A Dataset(Dict).save_to_disk directory (load_from_disk).")
    add("--dataset_config_name", default=None, help="Configuration name for load_dataset.")
    add("--train_split", default="train", help="Split to train on.")
    add("--streaming", action="store_true", help="Stream the training split; resume stays exact (docs/training.md).")
    add("--eval_split", default=None, help="Held-out split of the rank-correlation diagnostic.")
    add("--max_eval_samples", type=int, default=None, help="Use the first N examples of --eval_split.")
    add("--max_train_samples", type=int, default=None, help="Train on the first N examples.")
    add("--image_column", default="image", help="Column holding the images.")
    add("--label_column", default="label", help="Column holding the semantic label maps.")
    add("--vocabulary", help="Class names of the label ids: a shipped vocabulary, a .txt file or a comma list.")
    add("--label_mapping", default="none", choices=LABEL_MAPPINGS, help="'coco_stuff': raw stuffthingmaps values.")
    add("--ignore_index", type=int, default=255, help="Label value of unlabelled pixels.")
    add("--zero_shot", action="store_true", help="Ignore --unseen_classes (paper Tab. 1 setting).")
    add("--unseen_classes", default="coco_stuff_unseen_15", help="Unseen classes with --zero_shot.")
    add("--max_checked_examples", type=int, default=None, help="Check only the first N examples.")
    add("--dataloader_num_workers", type=int, default=0, help="DataLoader worker processes.")
    add("--cache_dir", default=None, help="Cache directory for Hub datasets and models.")
    group = parser.add_argument_group("augmentation and proposals")
    add = group.add_argument
    add("--crop_size", type=int, default=640, help="Square training crop = proposal/IoU resolution.")
    add("--short_side", type=_short_side, default=640, help="An int, a comma list or 'released' (320..960 step 64).")
    add("--max_size", type=int, default=2560, help="Cap on the long side after resizing.")
    add("--flip_prob", type=float, default=0.5, help="Probability of a horizontal flip.")
    add("--color_jitter", default="none", choices=COLOR_JITTERS, help="'ssd': the release's ColorAugSSDTransform.")
    proposals = group.add_mutually_exclusive_group(required=True)
    proposals.add_argument("--proposal_generator", help="Frozen proposal source, e.g. 'mask2former:<id>'.")
    proposals.add_argument("--proposal_column", help="Column of precomputed (N, H, W) proposals.")
    add("--num_proposals", type=int, default=None, help="Top-N queries of a universal generator.")
    add = parser.add_argument_group("optimisation").add_argument
    add("--per_device_train_batch_size", type=int, default=16, help="Images per process and micro-step.")
    add("--gradient_accumulation_steps", type=int, default=1, help="Micro-steps per optimizer step.")
    add("--learning_rate", type=float, default=1e-5, help="AdamW learning rate.")
    add("--weight_decay", type=float, default=1e-4, help="AdamW weight decay (0 on norms).")
    add("--max_grad_norm", type=float, default=0.01, help="Full-model gradient clipping (0 = off).")
    add("--max_train_steps", type=int, default=1000, help="Optimizer steps.")
    add("--lr_power", type=float, default=0.9, help="Power of the poly schedule.")
    add("--lr_warmup_steps", type=int, default=0, help="Linear warmup steps.")
    add("--distillation_weight", type=float, default=0.1, help="lambda of L_dis (paper: 1; 0 = off).")
    add("--loss_normalization", default="global", choices=LOSS_NORMALIZATIONS, help="'per_device': the release's.")
    add("--mixed_precision", default="no", choices=["no", "fp16", "bf16"], help="Accelerator precision.")
    add("--seed", type=int, default=0, help="Seed of the data order, augmentation and initial RNG.")
    group = parser.add_argument_group("run, checkpoints, tracking, hub")
    add = group.add_argument
    add("--output_dir", required=True, help="Where checkpoints, the final model and logs go.")
    add("--checkpointing_steps", type=int, default=None, help="Save the state every K steps (step_K).")
    add("--checkpoints_total_limit", type=int, default=None, help="Keep only the newest N checkpoints.")
    add("--resume_from_checkpoint", default=None, help="A step_K directory, or 'latest' (the newest of this run).")
    add("--overwrite_output_dir", action="store_true", help="Clear an --output_dir holding another run.")
    add("--allow_changed_settings", action="store_true", help="Resume a checkpoint written with other settings.")
    add("--with_tracking", action="store_true", help="Log the loss terms and LR with trackers.")
    add("--report_to", default="tensorboard", help="Trackers for --with_tracking (comma list allowed).")
    add_hub_arguments(group)
    add("--hub_private_repo", action="store_true", help="Create the repository as private.")
    add("--cpu", action="store_true", help="Run on CPU (Accelerator(cpu=True)), also with N processes.")
    add("--offline", action="store_true", help="Never use the network (local files only).")
    args = parser.parse_args(argv)
    if args.push_to_hub and args.offline:
        parser.error("--push_to_hub needs the network; it cannot be combined with --offline.")
    steps = ("per_device_train_batch_size", "gradient_accumulation_steps", "max_train_steps", "checkpointing_steps")
    check_positive(args, *steps, error=parser.error)
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}.")
    if args.streaming and args.dataloader_num_workers:  # a worker would read only a shard of the stream
        parser.error("--streaming needs --dataloader_num_workers 0: exact resume needs every process to read it all.")
    if args.overwrite_output_dir and args.resume_from_checkpoint:
        parser.error("--overwrite_output_dir clears the checkpoints --resume_from_checkpoint would resume; give one.")
    return args


def enable_offline_mode() -> None:
    """HF_HUB_OFFLINE / HF_DATASETS_OFFLINE semantics, also for libraries imported before this call."""
    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    for module in (sys.modules.get("huggingface_hub.constants"), sys.modules.get("datasets.config")):
        for attribute in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
            if hasattr(module, attribute):
                setattr(module, attribute, True)


def push_to_hub(output_dir: str, repo_id: str, token: str | None = None, private: bool = False) -> str:
    """Create (or reuse) the model repository and upload the final model folder without checkpoints; its id."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    repo_id = getattr(api.create_repo(repo_id, exist_ok=True, private=private, token=token), "repo_id", None) or repo_id
    message = "MAFT fine-tuning: final model"
    api.upload_folder(
        repo_id=repo_id, folder_path=output_dir, commit_message=message, token=token, ignore_patterns=UPLOAD_IGNORE
    )
    return repo_id


def _all_processes(accelerator, check):
    """Run `check()` on every process; raise the first `ValueError` on all of them, else return the results."""
    from accelerate.utils import gather_object

    try:
        outcome = (None, check())
    except ValueError as err:
        outcome = (str(err), None)
    outcomes = gather_object([outcome]) if accelerator.num_processes > 1 else [outcome]
    errors = [error for error, _ in outcomes if error]
    if errors:
        raise ValueError(errors[0])
    return [result for _, result in outcomes]


def _head(dataset, count: int | None, streaming: bool):
    """The first `count` examples (all when None); with `streaming`, as an `IterableDataset`."""
    import datasets

    if streaming:
        dataset = dataset if isinstance(dataset, datasets.IterableDataset) else dataset.to_iterable_dataset()
        return dataset if count is None else dataset.take(count)
    return dataset if count is None else dataset.select(range(min(count, len(dataset))))


def load_data(args, accelerator):
    """Training (and held-out) split, label converter and vocabulary, checked before any model is loaded."""
    import datasets

    from maft_hf.training import data

    if args.dataset_path is not None:
        raw = datasets.load_from_disk(args.dataset_path)
    else:
        raw = datasets.load_dataset(
            args.dataset_name, args.dataset_config_name, cache_dir=args.cache_dir, streaming=args.streaming
        )
    train = _head(data.select_split(raw, args.train_split), args.max_train_samples, args.streaming)
    held_out = None
    if args.eval_split:
        held_out = data.select_split(raw, args.eval_split, allow_unsplit=False)
        held_out = _head(held_out, args.max_eval_samples, args.streaming)
    stream = None
    if args.streaming:  # checks and the held-out split read the first examples of the streams
        stream, train = train, list(train.take(args.max_checked_examples or STREAM_CHECKED_EXAMPLES))
        if held_out is not None:
            held_out = list(held_out.take(args.max_eval_samples or STREAM_CHECKED_EXAMPLES))
    class_names = data.resolve_vocabulary(args.vocabulary, raw, args.label_mapping)
    unseen_ids = data.resolve_unseen_classes(args.unseen_classes, class_names) if args.zero_shot else []
    converter = data.LabelConverter(class_names, args.label_mapping, unseen_ids, args.ignore_index)
    args.training_vocabulary = converter.training_class_names
    logger.info("Training vocabulary: %d classes (%d unseen ignored)", len(args.training_vocabulary), len(unseen_ids))
    if len(train) == 0:  # every process raises the same error without a collective
        raise ValueError(f"Split {args.train_split!r} is empty: fine-tuning needs at least one example.")
    limit = min(args.max_checked_examples or len(train), len(train))
    columns = (args.image_column, args.label_column, converter, args.proposal_column)
    shard = range(accelerator.process_index, limit, accelerator.num_processes)
    check = data.validate_training_dataset
    counts = _all_processes(accelerator, lambda: check(train, *columns, args.train_split, shard))
    if sum(labelled for _, labelled in counts) == 0:
        unseen = " or of an unseen class" if unseen_ids else ""
        raise ValueError(
            f"Every pixel of the {limit} checked examples of split {args.train_split!r} is unlabelled (label "
            f"{args.ignore_index}{unseen}): the mask-aware loss would be 0 and nothing would be learnt. Check "
            "--label_column, --label_mapping, --ignore_index and --vocabulary."
        )
    if held_out is not None:
        check(held_out, *columns, split=args.eval_split, indices=range(0))
    logger.info("Checked %d training examples of split %r.", limit, args.train_split)
    return stream if args.streaming else train, held_out, converter


def build(args, accelerator, local_files_only):
    """Models, optimizer, scheduler and proposal generator, prepared by accelerate."""
    from maft_hf.hub.loading import load_model_and_processor
    from maft_hf.inference.text_classifier import build_text_classifier
    from maft_hf.training.data import load_training_proposal_generator
    from maft_hf.training.freezing import apply_freeze_policy, parameter_groups
    from maft_hf.training.objective import MaskAwareStudent, make_teacher, poly_lr_scheduler

    model, processor = load_model_and_processor(args.model_name_or_path, local_files_only=local_files_only)
    text_classifier = build_text_classifier(model, processor.tokenizer, args.training_vocabulary)
    teacher = make_teacher(model).to(accelerator.device) if args.distillation_weight != 0 else None
    summary = apply_freeze_policy(model, args.freeze_policy)
    counts = f"{summary['trainable']:,} trainable / {summary['frozen']:,} frozen parameters"
    logger.info(f"Freeze policy {args.freeze_policy!r}: {counts}.")
    generator = None
    if args.proposal_generator is not None:
        generator = load_training_proposal_generator(
            args.proposal_generator, local_files_only, args.num_proposals, accelerator.device
        )
    optimizer = torch.optim.AdamW(parameter_groups(model, args.weight_decay), lr=args.learning_rate)
    scheduler = poly_lr_scheduler(optimizer, args.max_train_steps, args.lr_power, args.lr_warmup_steps)
    student, optimizer = accelerator.prepare(MaskAwareStudent(model), optimizer)
    accelerator.register_for_checkpointing(scheduler)  # stepped once per optimizer step, by us
    return SimpleNamespace(
        student=student,
        teacher=teacher,
        optimizer=optimizer,
        scheduler=scheduler,
        processor=processor,
        generator=generator,
        text_classifier=text_classifier.to(accelerator.device),
    )


def evaluate(args, accelerator, parts, held_out, converter, name, metrics) -> None:
    """The rank-correlation diagnostic of the current weights on the held-out split (main process)."""
    from maft_hf.training.diagnostics import rank_correlation_eval

    if held_out is None:
        return
    if accelerator.is_main_process:
        image_processor = parts.processor.image_processor
        result = rank_correlation_eval(
            accelerator.unwrap_model(parts.student).model,
            held_out,
            parts.text_classifier,
            parts.generator,
            label_converter=converter,
            image_column=args.image_column,
            label_column=args.label_column,
            proposal_column=args.proposal_column,
            image_mean=image_processor.image_mean,
            image_std=image_processor.image_std,
            ignore_index=args.ignore_index,
            class_names=args.training_vocabulary,
        )
        metrics[f"rank_correlation_{name}"] = result["spearman"]
        metrics[f"eval_mask_aware_loss_{name}"] = result["mask_aware_loss"]
        logger.info(
            f"Held-out {args.eval_split} ({name} model, {result['num_images']} images): rank correlation "
            f"{result['spearman']:.4f} over {result['num_rows']} rows, mask-aware loss {result['mask_aware_loss']:.5f}"
        )
    accelerator.wait_for_everyone()


def claim_output_dir(args, accelerator) -> str | None:
    """Refuse a folder holding another run (or a checkpoint of other settings); the checkpoint to resume, if any."""
    from maft_hf.training.checkpoints import plan_run, remove_stale_temporaries, run_settings

    if accelerator.is_main_process:
        remove_stale_temporaries(args.output_dir)
    accelerator.wait_for_everyone()
    args.settings = run_settings(args)
    if args.overwrite_output_dir:
        return None
    path = plan_run(args.output_dir, args.settings, args.resume_from_checkpoint, args.allow_changed_settings)
    if path is None and args.resume_from_checkpoint:
        logger.warning("No checkpoint of this run in %s: starting from step 0.", args.output_dir)
    return path


def start_run(args, accelerator, parts, checkpoint) -> tuple[int, list]:
    """Clear the folder (--overwrite_output_dir), record the run, load `checkpoint`; `(start_step, loss history)`."""
    from maft_hf.training.checkpoints import RUN_FILE, clear_run_folder, load_training_state, run_id, write_json
    from maft_hf.training.freezing import parameter_groups

    if accelerator.is_main_process:
        if args.overwrite_output_dir:
            clear_run_folder(args.output_dir)
        run = {"run_id": run_id(args.settings), "settings": args.settings}
        write_json(os.path.join(args.output_dir, RUN_FILE), run)
    accelerator.wait_for_everyone()
    if checkpoint is None:
        return 0, []
    state = load_training_state(checkpoint)
    accelerator.load_state(checkpoint)
    if state.get("run_id") != run_id(args.settings):  # --allow_changed_settings: the optimizer takes the new ones
        fresh = parameter_groups(accelerator.unwrap_model(parts.student), args.weight_decay)
        parts.scheduler.base_lrs = [args.learning_rate] * len(fresh)
        for group, new, scale in zip(parts.optimizer.param_groups, fresh, parts.scheduler.lr_lambdas):
            group.update(weight_decay=new["weight_decay"], initial_lr=args.learning_rate)
            group["lr"] = args.learning_rate * scale(parts.scheduler.last_epoch)
        logger.warning("Resumed %s with changed settings (--allow_changed_settings).", checkpoint)
    logger.info("Resumed from %s at step %d.", checkpoint, int(state["completed_steps"]))
    return int(state["completed_steps"]), list(state.get("history", []))


def batches(args, accelerator, train, converter, start_step):
    """Iterator over this process's collated micro-batches from `start_step` on."""
    from maft_hf.training.data import AugmentationConfig, StepBatchSampler, StreamingExamples, TrainingExamples, collate

    augmentation = AugmentationConfig(args.crop_size, args.short_side, args.max_size, args.flip_prob, args.color_jitter)
    columns = (args.image_column, args.label_column, args.proposal_column)
    examples = TrainingExamples(train, converter, augmentation, args.seed, *columns)
    layout = (args.per_device_train_batch_size, args.max_train_steps, accelerator.num_processes)
    layout += (accelerator.process_index, args.gradient_accumulation_steps, min(start_step, args.max_train_steps))
    # with --streaming, only the sampler's layout of the steps is used
    sampler = StepBatchSampler(1 if args.streaming else len(examples), *layout, args.seed)
    if args.streaming:
        return iter(StreamingExamples(examples, sampler))
    workers = args.dataloader_num_workers
    return iter(torch.utils.data.DataLoader(examples, batch_sampler=sampler, collate_fn=collate, num_workers=workers))


def optimizer_step(args, accelerator, parts, micro_batches) -> dict:
    """One optimizer step over this process's micro-batches; returns its record. `--loss_normalization global`: both
    terms normalised over the global batch; `per_device` (the release): each micro-batch's means, averaged over
    micro-steps here and over processes by DDP's gradient averaging."""
    from maft_hf.training.losses import mask_aware_entry_count
    from maft_hf.training.objective import training_step

    num_classes, parts_per_step = len(args.training_vocabulary), accelerator.num_processes * len(micro_batches)
    per_device = args.loss_normalization == "per_device"
    if per_device:
        options, denominators = {"loss_scale": 1.0 / len(micro_batches)}, (parts_per_step, parts_per_step)
    else:
        count = sum(
            mask_aware_entry_count(b["labels"], num_classes, b["proposal_valid_mask"], args.ignore_index)
            for b in micro_batches
        )
        count = max(float(accelerator.reduce(torch.as_tensor(count, device=accelerator.device).double(), "sum")), 1.0)
        denominators = (count, float(args.global_batch_size * num_classes))
        options = {"mask_aware_normalizer": denominators[0], "distillation_normalizer": denominators[1]}
        options["loss_scale"] = accelerator.num_processes
    options.update(ignore_index=args.ignore_index, autocast=accelerator.autocast)
    sums = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    for index, batch in enumerate(micro_batches):
        with nullcontext() if index == len(micro_batches) - 1 else accelerator.no_sync(parts.student):
            out = training_step(
                parts.student, parts.teacher, batch, parts.text_classifier, args.distillation_weight, **options
            )
            accelerator.backward(out.loss)
        if per_device:
            terms = [out.mask_aware_loss, out.distillation_loss if out.distillation_count else out.distillation_sum]
        else:
            terms = [out.mask_aware_sum, out.distillation_sum]
        sums += torch.stack([term.double() for term in terms])
    if args.max_grad_norm > 0:
        accelerator.clip_grad_norm_([p for p in parts.student.parameters() if p.requires_grad], args.max_grad_norm)
    learning_rate = parts.optimizer.param_groups[0]["lr"]
    parts.optimizer.step()
    parts.scheduler.step()
    parts.optimizer.zero_grad(set_to_none=True)
    sums = accelerator.reduce(sums, "sum")
    mask_aware = float(sums[0]) / denominators[0]
    distillation = float(sums[1]) / denominators[1] if parts.teacher is not None else None
    total = mask_aware + (args.distillation_weight * distillation if distillation is not None else 0.0)
    return dict(loss=total, mask_aware_loss=mask_aware, distillation_loss=distillation, learning_rate=learning_rate)


def train(args, accelerator, parts, stream, start_step, history) -> list:
    """The optimizer steps from `start_step` to `--max_train_steps`, with checkpoints; returns the loss history."""
    from tqdm.auto import tqdm

    from maft_hf.training.checkpoints import prune_checkpoints, run_id, save_checkpoint
    from maft_hf.training.data import prepare_batch

    image_processor = parts.processor.image_processor
    input_size = accelerator.unwrap_model(parts.student).model.config.vision_config.input_image_size
    logger.info(
        f"MAFT fine-tuning: {args.max_train_steps} steps from step {start_step}, global batch "
        f"{args.global_batch_size} ({args.per_device_train_batch_size} per device x {accelerator.num_processes} "
        f"processes x {args.gradient_accumulation_steps})"
    )
    hidden = not accelerator.is_local_main_process
    progress = tqdm(range(args.max_train_steps), initial=start_step, disable=hidden, desc="MAFT", dynamic_ncols=True)
    prepare = (input_size, parts.generator, image_processor.image_mean, image_processor.image_std, accelerator.device)
    parts.student.train()
    for step in range(start_step, args.max_train_steps):
        micro_batches = [
            prepare_batch(next(stream), *prepare, args.training_vocabulary, parts.text_classifier)
            for _ in range(args.gradient_accumulation_steps)
        ]
        record = {"step": step + 1, **optimizer_step(args, accelerator, parts, micro_batches)}
        history.append(record)
        progress.update(1)
        progress.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['learning_rate']:.2e}")
        if args.with_tracking:
            logged = {f"train/{k}": v for k, v in record.items() if k != "step" and v is not None}
            accelerator.log(logged, step=step + 1)
        if not math.isfinite(record["loss"]):
            raise RuntimeError(
                f"The loss is {record['loss']} at step {step + 1}; stopping (try a lower --learning_rate)."
            )
        if args.checkpointing_steps and (step + 1) % args.checkpointing_steps == 0:
            state = {"completed_steps": step + 1, "run_id": run_id(args.settings), "settings": args.settings}
            state["history"] = history
            path = save_checkpoint(accelerator, args.output_dir, step + 1, state)
            if accelerator.is_main_process:
                prune_checkpoints(args.output_dir, args.checkpoints_total_limit)
            logger.info("Saved checkpoint %s", path)
    progress.close()
    return history


def save_results(args, accelerator, parts, history, metrics) -> None:
    """The final model, processor, losses, results and model card (and the Hub upload)."""
    from maft_hf.hub.model_card import write_model_card
    from maft_hf.training.checkpoints import LOSSES_FILE, RESULTS_FILE, write_json

    if history:
        metrics["train_loss"] = history[-1]["loss"]
        metrics["train_mask_aware_loss"] = history[-1]["mask_aware_loss"]
    metrics.update(train_steps=args.max_train_steps, num_processes=accelerator.num_processes)
    metrics["global_batch_size"] = args.global_batch_size
    if accelerator.is_main_process:
        accelerator.unwrap_model(parts.student).model.save_pretrained(args.output_dir)
        parts.processor.save_pretrained(args.output_dir)
        write_json(os.path.join(args.output_dir, LOSSES_FILE), history)
        write_json(os.path.join(args.output_dir, RESULTS_FILE), metrics)
        if args.push_to_hub and args.hub_model_id is None:
            args.hub_model_id = os.path.basename(os.path.abspath(args.output_dir))
        write_model_card(args.output_dir, args, metrics)
        if args.push_to_hub:
            repo_id = push_to_hub(args.output_dir, args.hub_model_id, args.hub_token, args.hub_private_repo)
            logger.info("Uploaded %s to %s", args.output_dir, repo_id)
    accelerator.wait_for_everyone()


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.offline:
        enable_offline_mode()
    import datasets
    import transformers
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed

    trackers = None
    if args.with_tracking:
        trackers = [t.strip() for t in args.report_to.split(",")] if "," in args.report_to else args.report_to
    accelerator = Accelerator(
        cpu=args.cpu,
        mixed_precision=args.mixed_precision,
        log_with=trackers,
        project_config=ProjectConfiguration(args.output_dir, logging_dir=os.path.join(args.output_dir, "logs")),
    )
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    logger.info(str(accelerator.state).replace("\n", " | "), main_process_only=False)
    verbosity = logging.WARNING if accelerator.is_local_main_process else logging.ERROR
    datasets.utils.logging.set_verbosity(verbosity)
    transformers.utils.logging.set_verbosity(verbosity)
    set_seed(args.seed)
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
    accelerator.wait_for_everyone()
    micro_batches = accelerator.num_processes * args.gradient_accumulation_steps
    args.global_batch_size = args.per_device_train_batch_size * micro_batches

    checkpoint = claim_output_dir(args, accelerator)
    train_split, held_out, converter = load_data(args, accelerator)
    parts = build(args, accelerator, True if args.offline else None)
    metrics = {}
    evaluate(args, accelerator, parts, held_out, converter, "start", metrics)  # the starting weights
    start_step, history = start_run(args, accelerator, parts, checkpoint)
    stream = batches(args, accelerator, train_split, converter, start_step)
    if args.with_tracking:
        config = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in vars(args).items()}
        accelerator.init_trackers("maft_finetune", {k: v for k, v in config.items() if k != "hub_token"})
    started = time.time()
    history = train(args, accelerator, parts, stream, start_step, history)
    logger.info("Training took %.1f s.", time.time() - started)
    accelerator.wait_for_everyone()
    evaluate(args, accelerator, parts, held_out, converter, "final", metrics)
    save_results(args, accelerator, parts, history, metrics)
    if args.with_tracking:
        accelerator.end_training()
    return metrics
