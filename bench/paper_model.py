"""Export the ``paper`` preset (untrained weights) into a model folder, for the benchmark.

    python -m bench.paper_model --out /tmp/vlt-paper-model

The ``paper`` preset is the released VLT graph (416 input, Darknet-53, BiGRU 1024, D 256, Nq 16).
Its weights here are random: the folder measures load time, memory and latency of a model of the
paper's size served by the same code, not its accuracy. The vocabulary is the default model's
(models/vlt-refshapes/vocab.txt), so requests that work there work here. Nothing is written
inside the repository unless --out points there.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from export.engine import save_checkpoint
from export.export_onnx import run_export
from export.vlt import build_vlt
from export.vlt.config import get_config


def build(out: Path, vocab_file: Path, seed: int = 0) -> None:
    words = vocab_file.read_text(encoding="utf-8").split("\n")[:-1]
    torch.manual_seed(seed)
    cfg = get_config("paper", vocab_size=len(words))
    model = build_vlt(cfg).eval()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "paper.pt"
        save_checkpoint(ckpt, model=model.state_dict(), model_ema=None, step=0, config=cfg.to_dict(), vocab=words,
                        vocab_info={"source": "models/vlt-refshapes/vocab.txt (untrained embedding)"},
                        args={"preset": "paper"})
        run_export(checkpoint=ckpt, out=out, name="vlt-paper-untrained", version="0.0.0-untrained", ema=False,
                   training={"note": "untrained weights, for benchmarking only"})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "vlt-paper-model")
    p.add_argument("--vocab", type=Path, default=Path("models/vlt-refshapes/vocab.txt"))
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    t0 = time.time()
    build(args.out, args.vocab)
    print(f"paper preset exported to {args.out} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
