"""Command line: ``python -m export.data.refshapes --out DIR --seed N --expressions 1000 [--hard]``."""

from __future__ import annotations

import argparse
import json
from typing import Sequence

from .dataset import RefShapesStream, write_set
from .spec import RefShapesConfig


def _bench(n: int, seed: int = 0, config: RefShapesConfig | None = None) -> None:
    import time

    ds = RefShapesStream(seed=seed, config=config)
    it = iter(ds)
    next(it)
    t0 = time.perf_counter()
    for _ in range(n):
        next(it)
    dt = time.perf_counter() - t0
    print(f"{1000 * dt / n:.3f} ms/sample over {n} samples")


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Write a RefShapes set.")
    ap.add_argument("--out", help="output directory")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--expressions", type=int, default=1000)
    ap.add_argument("--hard", action="store_true", help="8-10 objects per image")
    ap.add_argument("--bench", type=int, default=0, help="time N stream samples instead of writing")
    args = ap.parse_args(argv)
    cfg = RefShapesConfig.hard() if args.hard else RefShapesConfig()
    if args.bench:
        _bench(args.bench, args.seed, cfg)
        return
    if not args.out:
        ap.error("--out is required")
    info = write_set(args.out, seed=args.seed, num_expressions=args.expressions, config=cfg)
    print(json.dumps(info))


if __name__ == "__main__":
    main()
