"""Scene sampling: the objects of one image (kinds, colours, sizes, positions), placed without overlap."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .spec import COLORS, COLOR_NAMES, RefShapesConfig, SHAPES, SIZE_RANGES, THETA_RANGES


@dataclass
class Obj:
    shape: str
    color: str
    size: str
    cx: float
    cy: float
    r: float
    theta: float  # degrees, image coordinates (y down)
    rgb: tuple[int, int, int]

    def to_json(self) -> dict:
        return {
            "shape": self.shape, "color": self.color, "size": self.size,
            "cx": self.cx, "cy": self.cy, "r": self.r, "theta": self.theta,
        }


@dataclass
class Expression:
    text: str
    type: str
    target: int


@dataclass
class Scene:
    objects: list[Obj]
    grey: tuple[float, float, float]  # per-channel background level
    grad_a: float
    grad_phi: float
    expressions: list[Expression] = field(default_factory=list)


def _r2(x: float) -> float:
    # Annotations carry two decimals; the generator works on the rounded values
    # so that the annotation alone reproduces every decision and every pixel.
    return round(float(x), 2) + 0.0


def sample_objects(rng: np.random.Generator, config: RefShapesConfig) -> list[Obj]:
    """Sample a non-overlapping object layout (sequential placement)."""
    S = config.image_size
    while True:
        n = int(rng.integers(config.min_objects, config.max_objects + 1))
        k_kinds = int(rng.integers(config.min_kinds, config.max_kinds + 1))
        k_cols = int(rng.integers(config.min_colors, config.max_colors + 1))
        kinds = [SHAPES[i] for i in rng.choice(len(SHAPES), size=k_kinds, replace=False)]
        cols = [COLOR_NAMES[i] for i in rng.choice(len(COLOR_NAMES), size=k_cols, replace=False)]
        objs: list[Obj] = []
        ok = True
        for _ in range(n):
            placed = None
            for _attempt in range(config.max_place_attempts):
                size = "small" if rng.random() < config.p_small else "large"
                lo, hi = SIZE_RANGES[size]
                r = _r2(rng.uniform(lo, hi))
                m = r + config.margin
                cx = _r2(rng.uniform(m, S - m))
                cy = _r2(rng.uniform(m, S - m))
                if cx - r < config.margin or cy - r < config.margin or cx + r > S - config.margin or cy + r > S - config.margin:
                    continue  # rounding pushed it out
                if all(math.hypot(cx - o.cx, cy - o.cy) >= r + o.r + config.min_gap for o in objs):
                    placed = (size, r, cx, cy)
                    break
            if placed is None:
                ok = False
                break
            size, r, cx, cy = placed
            shape = kinds[int(rng.integers(len(kinds)))]
            color = cols[int(rng.integers(len(cols)))]
            tlo, thi = THETA_RANGES[shape]
            theta = _r2(rng.uniform(tlo, thi)) if thi > tlo else 0.0
            if shape in ("star", "hexagon") and theta >= thi:
                theta = tlo  # half-open range [0, 72) / [0, 60)
            centre = np.asarray(COLORS[color], dtype=np.float64)
            jit = rng.uniform(-config.color_jitter, config.color_jitter, size=3)
            rgb = tuple(int(v) for v in np.clip(np.rint(centre + jit), 0, 255))
            objs.append(Obj(shape, color, size, cx, cy, r, theta, rgb))
        if ok:
            return objs
