"""Average the weights of training runs that share a start (a "model soup").

    python -m export.tools.average_checkpoints runs/a/checkpoint.pt runs/b/checkpoint.pt \
        --out runs/soup/checkpoint.pt

Branches of one run that were each decayed from a different step of the same trunk usually sit in
one basin, and their mean can score above either. Both the raw and the EMA weights are averaged
(uniformly), so the release script's raw/EMA choice still applies. The result is a checkpoint for
evaluate, calibrate_threshold and export_onnx; it keeps no optimiser state, so it cannot be resumed.
`averaged_from` records each source (path, step, minutes); `elapsed` is the sum of the sources'
minutes less the trunk they share, when the caller names it with --shared-minutes.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from export.engine import save_checkpoint


def average_state(states: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """Mean of floating-point tensors; any other tensor (a counter) must agree and is kept."""
    keys = list(states[0])
    for s in states[1:]:
        if list(s) != keys:
            raise ValueError("the checkpoints hold different parameters")
    out: Dict[str, torch.Tensor] = {}
    for k in keys:
        ts = [s[k] for s in states]
        if any(t.shape != ts[0].shape for t in ts):
            raise ValueError(f"{k}: shapes differ")
        if ts[0].is_floating_point():
            out[k] = torch.stack([t.float() for t in ts]).mean(0).to(ts[0].dtype)
        else:
            out[k] = ts[-1].clone()
    return out


def average_checkpoints(paths: List[Path], shared_minutes: Optional[float] = None) -> Dict[str, Any]:
    ckpts = [torch.load(p, map_location="cpu", weights_only=False) for p in paths]
    first = ckpts[0]
    for p, c in zip(paths[1:], ckpts[1:]):
        # the same network and the same word ids, or the mean mixes unrelated rows
        if c["config"] != first["config"]:
            raise ValueError(f"{p}: another model config than {paths[0]}")
        if c["vocab"] != first["vocab"]:
            raise ValueError(f"{p}: another vocabulary than {paths[0]}")
    has_ema = all(c.get("model_ema") is not None for c in ckpts)
    minutes = [float(c["elapsed"]) / 60 for c in ckpts]
    elapsed = sum(minutes) - (len(ckpts) - 1) * shared_minutes if shared_minutes is not None else max(minutes)
    return dict(
        model=average_state([c["model"] for c in ckpts]),
        model_ema=average_state([c["model_ema"] for c in ckpts]) if has_ema else None,
        optimizer=None, aux=None, step=max(int(c["step"]) for c in ckpts),
        ema_updates=max(int(c.get("ema_updates", 0)) for c in ckpts),
        elapsed=elapsed * 60, config=first["config"], vocab=first["vocab"], vocab_info=first.get("vocab_info"),
        args=ckpts[-1].get("args", {}),
        averaged_from=[{"path": str(p), "step": int(c["step"]), "minutes": round(m, 1)}
                       for p, c, m in zip(paths, ckpts, minutes)],
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", type=Path, nargs="+", help="two or more checkpoint.pt of one model config")
    p.add_argument("--out", type=Path, required=True, help="checkpoint to write")
    p.add_argument("--shared-minutes", type=float, default=None,
                   help="training minutes the sources share (their common trunk), for the total compute")
    args = p.parse_args()
    if len(args.checkpoints) < 2:
        p.error("name at least two checkpoints")
    soup = average_checkpoints(args.checkpoints, args.shared_minutes)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(args.out, **soup)
    print(f"averaged {len(args.checkpoints)} checkpoints (steps "
          f"{', '.join(str(s['step']) for s in soup['averaged_from'])}) -> {args.out}, "
          f"{soup['elapsed'] / 60:.1f} training minutes")


if __name__ == "__main__":
    main()
