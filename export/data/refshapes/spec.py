"""The RefShapes v1 specification as constants: words, colours, sizes, rotations, expression forms, and the
configuration of a generated set (docs/refshapes.md)."""

from __future__ import annotations

from dataclasses import dataclass, field


SHAPES: tuple[str, ...] = ("circle", "square", "diamond", "triangle", "star", "hexagon")

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
    "purple": (150, 60, 200),
    "orange": (245, 140, 30),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
}
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)

SIZE_RANGES: dict[str, tuple[float, float]] = {"small": (10.0, 17.0), "large": (25.0, 36.0)}
SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
NOUNS: tuple[str, ...] = ("one", "shape", "object")  # noun when the shape is left out

# theta range in degrees per shape; circle has no rotation (recorded as 0.0)
THETA_RANGES: dict[str, tuple[float, float]] = {
    "circle": (0.0, 0.0),
    "square": (-15.0, 15.0),
    "diamond": (-10.0, 10.0),
    "triangle": (-20.0, 20.0),
    "star": (0.0, 72.0),
    "hexagon": (0.0, 60.0),
}

LOC_FORM1: dict[str, str] = {
    "left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
}
LOC_FORM2: dict[str, str] = {
    "left": "leftmost", "right": "rightmost", "top": "topmost", "bottom": "bottommost",
}
COMPARATIVE: dict[str, tuple[str, ...]] = {"large": ("bigger", "larger"), "small": ("smaller",)}
SUPERLATIVE: dict[str, tuple[str, ...]] = {"large": ("biggest", "largest"), "small": ("smallest",)}
RELATIONS: dict[str, tuple[str, ...]] = {
    "left": ("left of", "to the left of"),
    "right": ("right of", "to the right of"),
    "above": ("above",),
    "below": ("below",),
}
TYPES: tuple[str, ...] = ("attr", "location", "size", "relation")


def _all_words() -> list[str]:
    words = {"the"}
    words.update(SHAPES, COLOR_NAMES, NOUNS)
    for table in (SIZE_WORDS, COMPARATIVE, SUPERLATIVE, RELATIONS):
        for phrases in table.values():
            for p in phrases:
                words.update(p.split())
    for table in (LOC_FORM1, LOC_FORM2):
        for p in table.values():
            words.update(p.split())
    return sorted(words)


#: Every word the generator can ever emit, sorted.
WORDS: list[str] = _all_words()

# The generator keeps a tiny safety margin on every threshold so that float
# rounding in another checker can never flip a borderline decision.
_EPS = 1e-6


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------


@dataclass
class RefShapesConfig:
    image_size: int = 256
    min_objects: int = 3
    max_objects: int = 7  # inclusive; uniform over [min_objects, max_objects]
    jpeg_quality: int = 92
    # Expression-type shares (attr 25 %, location 25 %, size 20 %, relation 30 %).
    type_proportions: dict[str, float] = field(
        default_factory=lambda: {"attr": 0.25, "location": 0.25, "size": 0.20, "relation": 0.30}
    )
    min_expressions_per_image: int = 1
    max_expressions_per_image: int = 3  # inclusive; each about a different target
    # Per-scene subset sizes (inclusive) of shape kinds and colours.
    min_kinds: int = 2
    max_kinds: int = 4
    min_colors: int = 2
    max_colors: int = 4
    p_small: float = 0.5  # size class drawn per placement attempt (late objects end up smaller)
    margin: float = 2.0  # every object's circumcircle lies this far inside the canvas
    min_gap: float = 4.0  # centre distance >= r1 + r2 + min_gap
    max_place_attempts: int = 100  # per object; on failure the whole scene restarts
    grey_range: tuple[float, float] = (95.0, 165.0)
    channel_jitter: float = 12.0  # background channel = grey + U[-12, 12]
    gradient_amplitude: float = 25.0  # a ~ U[-25, 25] over the image width
    color_jitter: float = 12.0  # object colour channel = centre + U[-12, 12]
    noise_sigma: float = 5.0  # Gaussian noise added after the objects are drawn
    location_margin: float = 20.0  # extreme object at least this far beyond the next
    size_factor: float = 1.4  # extreme radius at least this factor over the next
    relation_min_offset: float = 20.0  # strict relation: offset >= 20, |cross| <= offset
    relaxed_factor: float = 1.2  # relaxed relation: offset >= 0, |cross| <= 1.2 * offset
    # Block length of the shuffled type queue used by the stream: every block of
    # 20 consecutive samples holds exactly 5 attr / 5 location / 4 size / 6 relation.
    type_block: int = 20

    @classmethod
    def hard(cls, **overrides) -> "RefShapesConfig":
        """The hard test variant: 8-10 objects per image."""
        kw = {"min_objects": 8, "max_objects": 10}
        kw.update(overrides)
        return cls(**kw)


def hard_config(**overrides) -> RefShapesConfig:
    """Alias of :meth:`RefShapesConfig.hard`."""
    return RefShapesConfig.hard(**overrides)
