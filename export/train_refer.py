"""Train VLT on RefCOCO / RefCOCO+ / G-Ref with the paper's recipe, on one or several GPUs.

    # one GPU
    python -m export.train_refer --refer-root data --dataset refcoco --glove glove.840B.300d.txt \\
        --darknet yolov3.weights --out runs/refcoco
    # N GPUs on one machine (the batch of 128 is split over them)
    torchrun --nproc_per_node=N -m export.train_refer --refer-root data --dataset refcoco \\
        --glove glove.840B.300d.txt --darknet yolov3.weights --out runs/refcoco

The recipe (docs/vlt.md §1, 'Training in the original'): the ``paper`` preset; Adam, lr 1e-3,
divided by 10 at epochs 40, 45 and 50; 50 epochs; batch 128; every object once per epoch with
one of its sentences drawn at random; BCE with logits summed over pixels / batch
(``export.engine.referring_loss``) + 5e-4 x the squared conv kernels; frozen 300-d GloVe vectors
(the vocabulary's data words are the training sentences' words); with ``--darknet``, Darknet-53
and the first four of the six head convs loaded from the darknet file and frozen (their
BatchNorms kept in eval mode); seed 10010. On CUDA: autocast (bf16 where supported, else fp16
with a GradScaler) and DataLoader workers; several GPUs through torchrun
(DistributedDataParallel). ``--resume`` continues from ``<out>/checkpoint.pt`` at the next epoch
(or mid-epoch, at the step it was written). Reads top to bottom: seed -> data + vocabulary ->
model -> optimiser -> loop -> checkpoint (P9).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import random
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from export.data.refer import ReferDataset, default_split_by, max_words_for
from export.engine import collate, load_checkpoint, save_checkpoint, train_one_step
from export.vlt import VLT, VLTConfig, build_vlt, count_parameters, get_config
from export.vlt.glove import BUNDLED, build_vocabulary
from export.vlt.tokenizer import Tokenizer


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("VLT training on RefCOCO / RefCOCO+ / G-Ref", add_help=False)
    # * Data
    p.add_argument("--refer-root", type=Path, required=True, help="folder with <dataset>/refs(<split_by>).p + instances.json")
    p.add_argument("--images", type=Path, default=None, help="COCO train2014 folder (default: looked up under --refer-root)")
    p.add_argument("--dataset", default="refcoco", help="refcoco, refcoco+ or refcocog")
    p.add_argument("--split-by", default=None, help="unc, umd or google (default: unc; umd for refcocog)")
    p.add_argument("--train-split", default="train", help="split to train on")
    p.add_argument("--eval-split", default="val", help="split scored after each epoch ('' to skip)")
    p.add_argument("--eval-limit", type=int, default=None, help="score only the first N sentences of --eval-split")
    # * Model
    p.add_argument("--preset", default="paper", help="config preset: paper, small or tiny")
    p.add_argument("--image-size", type=int, default=None, help="override the preset's input size S")
    p.add_argument("--max-words", type=int, default=None, help="L (default: 15; 20 for refcocog)")
    p.add_argument("--glove", default=BUNDLED, help="GloVe text file (the paper: 300-d glove.840B.300d.txt)")
    p.add_argument("--vocab-top-n", type=int, default=20000, help="most frequent GloVe words added to the vocabulary")
    p.add_argument("--darknet", type=Path, default=None,
                   help="darknet .weights (yolov3.weights or darknet53.conv.74): load and freeze the backbone")
    p.add_argument("--darknet-head", default="auto", choices=["auto", "yes", "no"],
                   help="also load the six YOLOv3 head convs from --darknet (auto: when the file has them)")
    p.add_argument("--frozen-head-convs", type=int, default=4, help="head convs frozen with the backbone (the paper: 4)")
    # * Optimisation
    p.add_argument("--epochs", type=int, default=50, help="epochs (the paper: 50)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (the paper: 1e-3)")
    p.add_argument("--lr-steps", type=int, nargs="*", default=[40, 45, 50], help="epochs at which lr is divided by 10")
    p.add_argument("--batch-size", type=int, default=128, help="global batch, split over the processes (the paper: 128)")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="L2 on conv kernels (the paper: 5e-4)")
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"],
                   help="autocast dtype (auto: bf16 on GPUs that support it, else fp16; off on CPU)")
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many steps in total (0: no limit; for tests)")
    # * Running
    p.add_argument("--seed", type=int, default=10010, help="seed (the paper's)")
    p.add_argument("--workers", type=int, default=8, help="DataLoader workers per process")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads per process (0: library default)")
    p.add_argument("--out", type=Path, default=Path("runs/refcoco"), help="output folder (checkpoint, log)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    p.add_argument("--log-every", type=int, default=50, help="steps between log lines")
    p.add_argument("--ckpt-minutes", type=float, default=20.0, help="minutes between mid-epoch checkpoints")
    return p


def lr_for_epoch(epoch: int, *, base_lr: float, steps: List[int]) -> float:
    """Step decay: base_lr / 10 ** (number of milestones <= epoch). Epochs count from 0, so with
    milestones 40, 45, 50 epochs 0-39 run at 1e-3, 40-44 at 1e-4, 45-49 at 1e-5."""
    return base_lr * 0.1 ** sum(1 for s in steps if epoch >= s)


def _setup_distributed(device_arg: Optional[str]) -> Dict[str, Any]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = device_arg or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda":
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if world > 1:
        # the other processes wait while process 0 reads GloVe and scores the val split
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo",
                                timeout=datetime.timedelta(hours=2))
    return {"world": world, "rank": rank, "device": torch.device(device)}


def _shared_vocabulary(train_set: ReferDataset, args: argparse.Namespace, *, rank: int, world: int):
    """Build the vocabulary and its GloVe table once (process 0) and share it through the output
    folder: a 300-d GloVe file is several GB, too much to read in every process."""
    shared = args.out / "vocabulary.pt"
    if rank == 0:
        vocab, table, info = build_vocabulary(train_set.words(), source=args.glove, top_n=args.vocab_top_n)
        if world > 1:
            torch.save({"vocab": vocab, "table": table, "info": info}, shared)
    if world > 1:
        dist.barrier()
        if rank != 0:
            saved = torch.load(shared, map_location="cpu", weights_only=False)
            vocab, table, info = saved["vocab"], saved["table"], saved["info"]
    return vocab, table, info


def _amp_dtype(choice: str, device: torch.device) -> Optional[torch.dtype]:
    if choice == "off" or (choice == "auto" and device.type != "cuda"):
        return None
    if choice == "bf16" or (choice == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def main(args: argparse.Namespace) -> Path:
    if args.threads:
        torch.set_num_threads(args.threads)
    env = _setup_distributed(args.device)
    rank, world, device = env["rank"], env["world"], env["device"]
    main_process = rank == 0
    args.out.mkdir(parents=True, exist_ok=True)
    ckpt_path = args.out / "checkpoint.pt"
    if args.batch_size % world or args.batch_size // world < 2:
        raise ValueError(f"--batch-size {args.batch_size} must split into at least 2 samples for each of {world} "
                         "processes (BatchNorm needs 2)")
    split_by = args.split_by or default_split_by(args.dataset)

    # 1) seed
    random.seed(args.seed + rank)
    np.random.seed(args.seed + rank)
    torch.manual_seed(args.seed)

    # 2) data and vocabulary (data words = every word of the training sentences)
    train_set = ReferDataset(args.refer_root, args.dataset, args.train_split, split_by=split_by, images=args.images,
                             train=True, seed=args.seed)
    resume = args.resume and ckpt_path.exists()
    ckpt: Dict[str, Any] = {}
    if resume:
        model, ckpt = load_checkpoint(ckpt_path, ema=False)
        cfg = VLTConfig.from_dict(ckpt["config"])
        vocab, vocab_info = ckpt["vocab"], ckpt["vocab_info"]
    else:
        vocab, table, vocab_info = _shared_vocabulary(train_set, args, rank=rank, world=world)
        overrides: Dict[str, Any] = {"vocab_size": len(vocab), "word_dim": int(table.shape[1]),
                                     "max_words": args.max_words or max_words_for(args.dataset)}
        if args.image_size:
            overrides["image_size"] = args.image_size
        cfg = get_config(args.preset, **overrides)
        torch.manual_seed(args.seed)  # same initial weights in every process
        model = build_vlt(cfg)
        model.language_encoder.embedding.load_vectors(torch.from_numpy(table))
    tokenizer = Tokenizer(vocab, cfg.max_words)

    # 3) model: pretrained, frozen Darknet-53 (+ the first head convs)
    frozen: List[nn.Module] = []
    darknet_report: Dict[str, Any] = ckpt.get("darknet", {}) if resume else {}
    if args.darknet is not None or darknet_report:
        from export.darknet import freeze_pretrained, load_darknet_weights

        if not resume:
            darknet_report = load_darknet_weights(model.backbone, args.darknet, head=args.darknet_head)
            darknet_report = {k: v for k, v in darknet_report.items() if k != "loaded"} | {"file": str(args.darknet)}
        frozen = freeze_pretrained(model.backbone, head_convs=args.frozen_head_convs)
    model = model.to(device)
    if main_process:
        print(f"preset {args.preset}: {count_parameters(model) / 1e6:.2f} M trainable parameters "
              f"({count_parameters(model, trainable_only=False) / 1e6:.2f} M in all); vocabulary {len(vocab)} "
              f"({vocab_info['data_words_in_glove']}/{vocab_info['data_words']} data words in GloVe); "
              f"{len(train_set)} training objects; {world} process(es) on {device}"
              + (f"; darknet {darknet_report}" if darknet_report else ""), flush=True)
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    # 4) optimiser (Adam, as in the paper), mixed precision
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    amp = _amp_dtype(args.amp, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)
    epoch, step, skip = 0, 0, 0
    if resume:
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        epoch, step, skip = int(ckpt["epoch"]), int(ckpt["step"]), int(ckpt.get("batches_done", 0))
        if main_process:
            print(f"resumed at epoch {epoch}, step {step} ({skip} batches of the epoch done)", flush=True)

    # 5) data loader: every object once per epoch, each process its share
    sampler = torch.utils.data.DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True,
                                                  seed=args.seed, drop_last=True)
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=args.batch_size // world, sampler=sampler, num_workers=args.workers, drop_last=True,
        collate_fn=functools.partial(collate, tokenizer=tokenizer, image_size=cfg.image_size, mask_size=cfg.mask_size),
        pin_memory=device.type == "cuda", persistent_workers=False,
    )

    def checkpoint(next_epoch: int, batches_done: int) -> None:
        if main_process:
            save_checkpoint(
                ckpt_path, model=model.state_dict(), model_ema=None, optimizer=optimizer.state_dict(),
                scaler=scaler.state_dict() if scaler.is_enabled() else None, epoch=next_epoch, step=step,
                batches_done=batches_done, config=cfg.to_dict(), vocab=vocab, vocab_info=vocab_info,
                darknet=darknet_report, args={k: str(v) for k, v in vars(args).items()},
            )

    # 6) loop
    log = (args.out / "log.jsonl").open("a") if main_process else None
    t_start, last_ckpt = time.time(), time.time()
    done = False
    while epoch < args.epochs and not done:
        lr = lr_for_epoch(epoch, base_lr=args.lr, steps=args.lr_steps)
        for g in optimizer.param_groups:
            g["lr"] = lr
        train_set.set_epoch(epoch)
        sampler.set_epoch(epoch)
        window: Dict[str, float] = {"loss": 0.0, "n": 0}
        for i, batch in enumerate(loader):
            if i < skip:
                continue
            stats = train_one_step(model, batch, optimizer, weight_decay=args.weight_decay, amp=amp, net=net,
                                   frozen=frozen, scaler=scaler, device=device)
            step += 1
            window["loss"] += stats["loss"]
            window["n"] += 1
            if main_process and step % args.log_every == 0:
                row = {"epoch": epoch, "step": step, "lr": lr, "loss": round(window["loss"] / window["n"], 3),
                       "minutes": round((time.time() - t_start) / 60, 2)}
                print(json.dumps(row), flush=True)
                log.write(json.dumps(row) + "\n")
                log.flush()
                window = {"loss": 0.0, "n": 0}
            if args.max_steps and step >= args.max_steps:
                checkpoint(epoch, i + 1)
                done = True
                break
            if time.time() - last_ckpt > args.ckpt_minutes * 60:
                checkpoint(epoch, i + 1)
                last_ckpt = time.time()
        if done:
            break
        skip = 0
        epoch += 1
        checkpoint(epoch, 0)
        if main_process and args.eval_split:
            scored = evaluate_epoch(model, args, split_by, tokenizer, cfg, device)
            row = {"epoch": epoch, "step": step, "eval": scored}
            print(json.dumps({"epoch": epoch, **{k: {m: round(v[m], 2) for m in ("oIoU", "mIoU")}
                                                 for k, v in scored.items()}}), flush=True)
            log.write(json.dumps(row) + "\n")
            log.flush()
        if world > 1:
            dist.barrier()
    if main_process:
        print(f"done: epoch {epoch}, step {step}, {(time.time() - t_start) / 60:.1f} min -> {ckpt_path}", flush=True)
    if world > 1:
        dist.destroy_process_group()
    return ckpt_path


def evaluate_epoch(model: VLT, args: argparse.Namespace, split_by: str, tokenizer: Tokenizer, cfg: VLTConfig,
                   device: torch.device) -> Dict[str, Dict[str, float]]:
    from export.evaluate import torch_predictor
    from export.evaluate_refer import evaluate_refer

    data = ReferDataset(args.refer_root, args.dataset, args.eval_split, split_by=split_by, images=args.images)
    return evaluate_refer(torch_predictor(model, device=str(device)), data, tokenizer=tokenizer,
                          image_size=cfg.image_size, batch_size=max(1, args.batch_size // 4),
                          workers=args.workers, limit=args.eval_limit)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[get_args_parser()], description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    main(parser.parse_args())
