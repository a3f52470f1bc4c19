"""The independent checker: its own word tables, parser and reading of the rules, so the tests re-check
uniqueness through a different code path than the generator's."""

from __future__ import annotations

import re
from typing import Sequence


# Written separately from the generator on purpose: its own word tables, its
# own parser and its own reading of the rules, so the tests re-check
# uniqueness through a different code path.

_CK_SIZE = {"small": "small", "little": "small", "tiny": "small", "large": "large", "big": "large"}
_CK_COLOR = {"red", "green", "blue", "yellow", "purple", "orange", "white", "black"}
_CK_SHAPE = {"circle", "square", "diamond", "triangle", "star", "hexagon"}
_CK_NOUN = {"one", "shape", "object"}
_CK_LOC1 = {"on the left": "left", "on the right": "right", "at the top": "top", "at the bottom": "bottom"}
_CK_LOC2 = {"leftmost": "left", "rightmost": "right", "topmost": "top", "bottommost": "bottom"}
_CK_CMP = {"bigger": "large", "larger": "large", "smaller": "small"}
_CK_SUP = {"biggest": "large", "largest": "large", "smallest": "small"}
_CK_REL = {"to the left of": "left", "left of": "left", "to the right of": "right",
           "right of": "right", "above": "above", "below": "below"}
_CK_REL_RE = re.compile(r"^the (.+?) (to the left of|to the right of|left of|right of|above|below) the (.+)$")


def _ck_desc(text: str) -> dict:
    ws = text.split(" ")
    d: dict = {}
    if ws and ws[0] in _CK_SIZE:
        d["size"] = _CK_SIZE[ws.pop(0)]
    if ws and ws[0] in _CK_COLOR:
        d["color"] = ws.pop(0)
    if len(ws) != 1:
        raise ValueError(f"bad description {text!r}")
    if ws[0] in _CK_SHAPE:
        d["shape"] = ws[0]
    elif ws[0] not in _CK_NOUN:
        raise ValueError(f"bad noun in {text!r}")
    if not d:
        raise ValueError(f"empty description {text!r}")
    return d


def parse_expression(expression: str) -> dict:
    """Parse an expression into its type and parts (raises ValueError if malformed)."""
    if expression != expression.strip().lower() or "  " in expression or not expression.startswith("the "):
        raise ValueError(f"bad form {expression!r}")
    if len(expression.split(" ")) > 15:
        raise ValueError("more than 15 words")
    m = _CK_REL_RE.match(expression)
    if m:
        return {"type": "relation", "desc": _ck_desc(m.group(1)), "relation": _CK_REL[m.group(2)],
                "anchor": _ck_desc(m.group(3))}
    body = expression[4:]
    for phrase, direction in _CK_LOC1.items():
        if body.endswith(" " + phrase):
            return {"type": "location", "desc": _ck_desc(body[: -len(phrase) - 1]), "direction": direction}
    first, _, rest = body.partition(" ")
    if first in _CK_LOC2:
        return {"type": "location", "desc": _ck_desc(rest), "direction": _CK_LOC2[first]}
    if first in _CK_CMP:
        return {"type": "size", "desc": _ck_desc(rest), "direction": _CK_CMP[first], "degree": "comparative"}
    if first in _CK_SUP:
        return {"type": "size", "desc": _ck_desc(rest), "direction": _CK_SUP[first], "degree": "superlative"}
    return {"type": "attr", "desc": _ck_desc(body)}


def _ck_get(o, k):
    return o[k] if isinstance(o, dict) else getattr(o, k)


def _ck_fits(desc: dict, o) -> bool:
    return all(_ck_get(o, k) == v for k, v in desc.items())


def _ck_minimal_unique(desc: dict, idx: int, objects) -> bool:
    """True when no description with fewer words identifies objects[idx]."""
    o = objects[idx]
    keys = ("size", "color", "shape")
    n = len(desc)
    for mask in range(1, 8):
        sub = {k: _ck_get(o, k) for b, k in enumerate(keys) if mask >> b & 1}
        if len(sub) < n and sum(_ck_fits(sub, p) for p in objects) == 1:
            return False
    return True


def referents(expression: str, objects: Sequence, strict: bool = True) -> list[int]:
    """Indices of every object ``expression`` could refer to under the spec.

    ``objects`` are annotation dicts (or :class:`Obj`). A well-formed expression
    returns exactly ``[target]``. With ``strict`` the form rules are enforced
    too and a violation raises ``ValueError``: attr/anchor descriptions must be
    unique and shortest, location/relation descriptions must match >= 2
    objects (relation: besides the anchor), size descriptions must have a shape
    and no size word, comparatives exactly 2 matches, superlatives >= 3.
    """
    p = parse_expression(expression)
    desc = p["desc"]
    idx = [i for i, o in enumerate(objects) if _ck_fits(desc, o)]
    kind = p["type"]
    if kind == "attr":
        if strict and len(idx) == 1 and not _ck_minimal_unique(desc, idx[0], objects):
            raise ValueError(f"{expression!r}: not the shortest description")
        return idx
    if kind == "location":
        if strict and len(idx) < 2:
            raise ValueError(f"{expression!r}: description matches < 2 objects")
        if not idx:
            return []
        key, sign = {"left": ("cx", 1), "right": ("cx", -1), "top": ("cy", 1), "bottom": ("cy", -1)}[p["direction"]]
        vals = {i: _ck_get(objects[i], key) for i in idx}
        best = min(vals.values()) if sign == 1 else max(vals.values())
        # any match within 20 px of the extreme competes with it
        return [i for i in idx if (vals[i] - best if sign == 1 else best - vals[i]) < 20]
    if kind == "size":
        if strict:
            if "size" in desc or "shape" not in desc:
                raise ValueError(f"{expression!r}: size description needs a shape and no size word")
            if p["degree"] == "comparative" and len(idx) != 2:
                raise ValueError(f"{expression!r}: comparative needs exactly 2 matches")
            if p["degree"] == "superlative" and len(idx) < 3:
                raise ValueError(f"{expression!r}: superlative needs >= 3 matches")
        if not idx:
            return []
        rs = {i: _ck_get(objects[i], "r") for i in idx}
        if p["direction"] == "large":
            best = max(rs.values())
            return [i for i in idx if not (best >= 1.4 * rs[i]) or rs[i] == best]
        best = min(rs.values())
        return [i for i in idx if not (rs[i] >= 1.4 * best) or rs[i] == best]
    # relation
    anchors = [i for i, o in enumerate(objects) if _ck_fits(p["anchor"], o)]
    if strict:
        if len(anchors) != 1:
            raise ValueError(f"{expression!r}: anchor matches {len(anchors)} objects")
        if not _ck_minimal_unique(p["anchor"], anchors[0], objects):
            raise ValueError(f"{expression!r}: anchor description not the shortest")
    out: set[int] = set()
    for ai in anchors:
        a = objects[ai]
        ax, ay = _ck_get(a, "cx"), _ck_get(a, "cy")
        cand = [i for i in idx if i != ai]
        if strict and len(cand) < 2:
            raise ValueError(f"{expression!r}: description matches < 2 objects besides the anchor")
        strict_rel, relaxed_rel = [], []
        for i in cand:
            ox, oy = _ck_get(objects[i], "cx"), _ck_get(objects[i], "cy")
            off, cross = {
                "left": (ax - ox, ay - oy), "right": (ox - ax, oy - ay),
                "above": (ay - oy, ax - ox), "below": (oy - ay, ox - ax),
            }[p["relation"]]
            if off >= 20 and abs(cross) <= off:
                strict_rel.append(i)
            if off >= 0 and abs(cross) <= 1.2 * off:
                relaxed_rel.append(i)
        if strict_rel:
            out.update(relaxed_rel)
    return sorted(out)
