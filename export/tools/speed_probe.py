"""Training speed of a preset on this machine: train.py's optimiser step (``engine.train_one_step``:
forward, loss, backward, Adam) on random tensors shaped like a training batch, and each top-level
module's share of the forward pass.

    python -m export.tools.speed_probe --preset tiny
    python -m export.tools.speed_probe --preset tiny --set decoder_width=16 --set backbone_width=12
    python -m export.tools.speed_probe --preset tiny --compile        # torch.compile the step's forward
    python -m export.tools.speed_probe --preset tiny --no-bf16 --no-channels-last

Data generation, the EMA and the monitor evaluations are left out, so a real run's samples/s
(train.py's log) is lower. Run it on a quiet machine: anything else on the cores skews it.
"""

from __future__ import annotations

import argparse
import time
from typing import Dict

import torch

from export.engine import train_one_step
from export.train import get_args_parser as train_args_parser
from export.vlt import build_vlt, count_parameters
from export.vlt.config import get_config, parse_overrides


def probe(args: argparse.Namespace) -> Dict[str, float]:
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = get_config(args.preset, **parse_overrides(args.set))
    cfg.vocab_size = 1000
    model = build_vlt(cfg).train()
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    s, b = cfg.image_size, args.batch_size
    batch = {
        "image": torch.rand(args.images, 3, s, s),
        "image_index": torch.arange(b) % args.images,  # every scene's expressions share its backbone pass
        "tokens": torch.randint(1, cfg.vocab_size, (b, cfg.max_words)),
        "target": (torch.rand(b, 1, cfg.mask_size, cfg.mask_size) < 0.03).float(),
    }

    forward_ms: Dict[str, float] = {}
    started: Dict[str, float] = {}
    for name, child in model.named_children():
        def pre(_m, _i, name=name):
            started[name] = time.perf_counter()

        def post(_m, _i, _o, name=name):
            forward_ms[name] = forward_ms.get(name, 0.0) + 1000 * (time.perf_counter() - started[name])

        child.register_forward_pre_hook(pre)
        child.register_forward_hook(post)

    if args.compile:  # the two halves train_one_step calls (engine.forward_batch)
        model.encode_image = torch.compile(model.encode_image)
        model.decode = torch.compile(model.decode)
    recipe = train_args_parser().parse_args([])  # train.py's defaults: the shipped recipe's loss terms
    kw = dict(weight_decay=recipe.weight_decay, dice_weight=recipe.dice_weight, amp=torch.bfloat16 if args.bf16 else None,
              channels_last=args.channels_last)
    times = []
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            forward_ms.clear()
        t0 = time.perf_counter()
        train_one_step(model, batch, opt, **kw)
        times.append(time.perf_counter() - t0)
        if i < args.warmup:
            print(f"warm-up step {i}: {times[-1]:.2f} s", flush=True)
    step_s = sorted(times[args.warmup:])[len(times[args.warmup:]) // 2]
    params = count_parameters(model)
    result = {"step_ms": 1000 * step_s, "samples_per_s": b / step_s, "params_M": params / 1e6}
    print(f"preset {args.preset} {parse_overrides(args.set) or ''} bf16={args.bf16} channels_last={args.channels_last} "
          f"compile={args.compile} batch {b} on {args.images} images, {torch.get_num_threads()} threads")
    print(f"params {result['params_M']:.2f} M | step (median of {args.steps}) {result['step_ms']:.0f} ms | "
          f"{result['samples_per_s']:.1f} samples/s")
    if not args.compile:  # compiled graphs bypass the module hooks
        print("forward ms per step: " + ", ".join(f"{k} {v / args.steps:.0f}" for k, v in forward_ms.items()))
    return result


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    p.add_argument("--batch-size", type=int, default=32, help="expressions per step")
    p.add_argument("--images", type=int, default=12, help="scenes per step (train.py averages 12.5 at 2-4 per scene)")
    p.add_argument("--steps", type=int, default=8, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: all cores)")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--compile", action="store_true", help="torch.compile the forward pass")
    return p


if __name__ == "__main__":
    probe(get_args_parser().parse_args())
