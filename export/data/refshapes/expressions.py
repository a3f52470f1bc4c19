"""Expression generation: the minimal unique description of a target for each type, and whole scenes with
their expressions drawn from a queue of types with exact shares."""

from __future__ import annotations

import math
from collections import deque
from typing import Callable, Iterator, Sequence

import numpy as np

from .scene import Expression, Obj, Scene, sample_objects
from .spec import COMPARATIVE, LOC_FORM1, LOC_FORM2, NOUNS, RELATIONS, RefShapesConfig, SIZE_WORDS, SUPERLATIVE, _EPS

# A description is a tuple (size | None, colour | None, shape | None).
_PATTERNS = [(zs, c, s) for zs in (0, 1) for c in (0, 1) for s in (0, 1) if zs or c or s]


def _descs_of(o: Obj) -> list[tuple]:
    return [(o.size if z else None, o.color if c else None, o.shape if s else None) for z, c, s in _PATTERNS]


def _gen_match(d: tuple, o: Obj) -> bool:
    z, c, s = d
    return (z is None or o.size == z) and (c is None or o.color == c) and (s is None or o.shape == s)


def _dlen(d: tuple) -> int:
    return sum(x is not None for x in d)


def _d_words(d: tuple, rng: np.random.Generator) -> str:
    z, c, s = d
    w = []
    if z is not None:
        opts = SIZE_WORDS[z]
        w.append(opts[int(rng.integers(len(opts)))])
    if c is not None:
        w.append(c)
    w.append(s if s is not None else NOUNS[int(rng.integers(len(NOUNS)))])
    return " ".join(w)


def _shortest_unique(objs: list[Obj], i: int) -> list[tuple]:
    uniq = [d for d in _descs_of(objs[i]) if sum(_gen_match(d, o) for o in objs) == 1]
    if not uniq:
        return []
    m = min(_dlen(d) for d in uniq)
    return [d for d in uniq if _dlen(d) == m]


def _rel_offsets(direction: str, o: Obj, a: Obj) -> tuple[float, float]:
    """(offset, cross offset) of o relative to anchor a for a relation."""
    if direction == "left":
        return a.cx - o.cx, a.cy - o.cy
    if direction == "right":
        return o.cx - a.cx, o.cy - a.cy
    if direction == "above":
        return a.cy - o.cy, a.cx - o.cx
    return o.cy - a.cy, o.cx - a.cx  # below


def _options(objs: list[Obj], t: int, typ: str, config: RefShapesConfig) -> list[tuple]:
    """All valid expression structures of type ``typ`` for target ``t``."""
    tgt = objs[t]
    out: list[tuple] = []
    if typ == "attr":
        return [("attr", d) for d in _shortest_unique(objs, t)]
    if typ == "location":
        for d in _descs_of(tgt):
            ms = [o for o in objs if _gen_match(d, o)]
            if len(ms) < 2:
                continue
            others = [o for o in ms if o is not tgt]
            if min(o.cx for o in others) - tgt.cx >= config.location_margin + _EPS:
                out.append(("location", d, "left"))
            if tgt.cx - max(o.cx for o in others) >= config.location_margin + _EPS:
                out.append(("location", d, "right"))
            if min(o.cy for o in others) - tgt.cy >= config.location_margin + _EPS:
                out.append(("location", d, "top"))
            if tgt.cy - max(o.cy for o in others) >= config.location_margin + _EPS:
                out.append(("location", d, "bottom"))
        return out
    if typ == "size":
        for d in ((None, None, tgt.shape), (None, tgt.color, tgt.shape)):
            ms = [o for o in objs if _gen_match(d, o)]
            if len(ms) < 2:
                continue
            others = [o for o in ms if o is not tgt]
            if tgt.r >= config.size_factor * max(o.r for o in others) + _EPS:
                out.append(("size", d, "large", len(ms)))
            if min(o.r for o in others) >= config.size_factor * tgt.r + _EPS:
                out.append(("size", d, "small", len(ms)))
        return out
    if typ == "relation":
        for ai, a in enumerate(objs):
            if ai == t:
                continue
            adescs = _shortest_unique(objs, ai)
            if not adescs:
                continue
            for d in _descs_of(tgt):
                ms = [o for j, o in enumerate(objs) if j != ai and _gen_match(d, o)]
                if len(ms) < 2:
                    continue
                for direction in RELATIONS:
                    off, cross = _rel_offsets(direction, tgt, a)
                    if not (off >= config.relation_min_offset + _EPS and abs(cross) <= off - _EPS):
                        continue
                    clash = False
                    for o in ms:
                        if o is tgt:
                            continue
                        oo, oc = _rel_offsets(direction, o, a)
                        if oo >= -_EPS and abs(oc) <= config.relaxed_factor * oo + _EPS:
                            clash = True
                            break
                    if not clash:
                        out.append(("relation", d, direction, ai, adescs))
        return out
    raise ValueError(f"unknown type {typ!r}")


def _realise(opt: tuple, objs: list[Obj], rng: np.random.Generator) -> str:
    kind = opt[0]
    if kind == "attr":
        return "the " + _d_words(opt[1], rng)
    if kind == "location":
        _, d, direction = opt
        dw = _d_words(d, rng)
        if rng.random() < 0.5:
            return f"the {dw} {LOC_FORM1[direction]}"
        return f"the {LOC_FORM2[direction]} {dw}"
    if kind == "size":
        _, d, direction, n = opt
        words = COMPARATIVE[direction] if n == 2 else SUPERLATIVE[direction]
        return f"the {words[int(rng.integers(len(words)))]} {_d_words(d, rng)}"
    _, d, direction, ai, adescs = opt
    words = RELATIONS[direction]
    rel = words[int(rng.integers(len(words)))]
    dw = _d_words(d, rng)
    a = adescs[int(rng.integers(len(adescs)))]
    return f"the {dw} {rel} the {_d_words(a, rng)}"


def make_expression(objs: list[Obj], typ: str, rng: np.random.Generator, config: RefShapesConfig,
                    exclude: Sequence[int] = ()) -> Expression | None:
    """One expression of type ``typ`` about a target not in ``exclude``.

    The target is drawn uniformly among the objects that admit such an
    expression, then the structure uniformly among that target's options and
    the words uniformly from their lists. ``None`` when no target qualifies.
    """
    per_target = []
    for t in range(len(objs)):
        if t in exclude:
            continue
        opts = _options(objs, t, typ, config)
        if opts:
            per_target.append((t, opts))
    if not per_target:
        return None
    t, opts = per_target[int(rng.integers(len(per_target)))]
    opt = opts[int(rng.integers(len(opts)))]
    return Expression(_realise(opt, objs, rng), typ, t)


def generate_scene(rng: np.random.Generator, config: RefShapesConfig | None = None,
                   next_type: Callable[[], str] | None = None,
                   consume_type: Callable[[], None] | None = None) -> Scene:
    """Sample one scene and 1-3 expressions about different targets.

    Types come from ``next_type()`` (peek) / ``consume_type()`` (pop) when
    given, else they are drawn i.i.d. with ``config.type_proportions``. When the
    pending type admits no new target the scene stops early (possibly with no
    expression at all; the caller then moves on to a new scene and the pending
    type stays pending, which keeps the type shares exact).
    Deterministic: the same generator state gives the same scene.
    """
    config = config or RefShapesConfig()
    objs = sample_objects(rng, config)
    g = rng.uniform(*config.grey_range)
    grey = tuple(float(g + rng.uniform(-config.channel_jitter, config.channel_jitter)) for _ in range(3))
    grad_a = float(rng.uniform(-config.gradient_amplitude, config.gradient_amplitude))
    grad_phi = float(rng.uniform(0.0, 2 * math.pi))
    scene = Scene(objs, grey, grad_a, grad_phi)
    k = int(rng.integers(config.min_expressions_per_image, config.max_expressions_per_image + 1))
    if next_type is None:
        names = list(config.type_proportions)
        p = np.asarray([config.type_proportions[n] for n in names], dtype=np.float64)
        p = p / p.sum()
        pending = [None]

        def next_type() -> str:
            if pending[0] is None:
                pending[0] = names[int(rng.choice(len(names), p=p))]
            return pending[0]

        def consume_type() -> None:
            pending[0] = None
    used: list[int] = []
    for _ in range(k):
        typ = next_type()
        if typ is None:
            break
        e = make_expression(objs, typ, rng, config, exclude=used)
        if e is None:
            break
        consume_type()
        used.append(e.target)
        scene.expressions.append(e)
    return scene


class _TypeQueue:
    """Shuffled blocks with exact type counts; peek/pop interface."""

    def __init__(self, rng: np.random.Generator, config: RefShapesConfig, total: int | None = None):
        self.rng = rng
        self.config = config
        self.q: deque[str] = deque()
        if total is not None:
            self._fill(total)
        self.infinite = total is None

    def _fill(self, n: int) -> None:
        props = self.config.type_proportions
        names = list(props)
        tot = sum(props.values())
        raw = [props[k] / tot * n for k in names]
        counts = [int(math.floor(x)) for x in raw]
        # largest remainders get the leftover slots
        for i in sorted(range(len(names)), key=lambda i: raw[i] - counts[i], reverse=True)[: n - sum(counts)]:
            counts[i] += 1
        block = [nm for nm, c in zip(names, counts) for _ in range(c)]
        self.rng.shuffle(block)
        self.q.extend(block)

    def peek(self) -> str:
        if not self.q:
            self._fill(self.config.type_block)
        return self.q[0]

    def pop(self) -> None:
        self.q.popleft()

    def __len__(self) -> int:
        return len(self.q)


def iter_scenes(rng: np.random.Generator, config: RefShapesConfig,
                total: int | None = None) -> Iterator[Scene]:
    """Scenes with at least one expression, types from an exact-share queue.

    With ``total`` the stream stops once exactly ``total`` expressions were made.
    """
    tq = _TypeQueue(rng, config, total)

    def nxt() -> str | None:
        if not tq.infinite and len(tq) == 0:
            return None  # never make more expressions than asked for
        return tq.peek()

    while tq.infinite or len(tq) > 0:
        scene = generate_scene(rng, config, next_type=nxt, consume_type=tq.pop)
        if scene.expressions:
            yield scene
