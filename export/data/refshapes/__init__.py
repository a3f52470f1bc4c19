"""RefShapes v1 generator (the specification: ``docs/refshapes.md``).

Produces synthetic referring-segmentation samples: a 256x256 image of 3-7
flat-coloured shapes on a noisy grey background, an English referring
expression that singles out exactly one object, and that object's mask.

Worked example
--------------
A scene draws its shapes from a random subset of kinds, say {circle, diamond,
square}, and its colours from a random subset, say {yellow, black}. Objects
are placed one by one (each attempt redraws the size class, radius and
centre until it is at least r1 + r2 + 4 px from every earlier object and
2 px inside the canvas)::

    0  square   yellow small  cx=19.20  cy=205.46 r=10.66 theta=3.22
    1  circle   black  small  cx=25.02  cy=23.89  r=16.31 theta=0.00
    2  diamond  yellow large  cx=137.59 cy=100.02 r=35.33 theta=9.04
    3  circle   yellow small  cx=240.99 cy=210.57 r=11.30 theta=0.00

Suppose the type queue asks for a *relation* expression. Every unused
target is tried: for target 0 with anchor 2, the anchor's shortest unique
description is "large" (it is the only large object; "diamond" ties and the
tie is broken at random), rendered "the large object" (no shape, so the noun
is one of one/shape/object). The description D = {colour: yellow} of the
target matches objects 0 and 3 besides the anchor (>= 2, as required). Object
0 is *left of* the anchor (137.59 - 19.20 = 118.39 >= 20 and
|100.02 - 205.46| = 105.44 <= 118.39), object 3 is not even in the relaxed
relation (offset < 0), so the expression

    "the yellow shape left of the large object"      (type relation, target 0)

is unique. Its mask is the set of pixels Pillow fills when drawing the
square's polygon (4 vertices at radius 10.66, angles 45 + k*90 deg, rotated
by 3.22 deg around (19.20, 205.46)), written as 255 in ``masks/NNNNNN.png``.
The image is the background (grey level + per-channel jitter + linear
gradient), the four shapes in their jittered colours, Gaussian noise sigma=5,
clipped, rounded and saved as JPEG quality 92.

Main API
--------
- :class:`RefShapesConfig` (+ :meth:`RefShapesConfig.hard`)
- :func:`generate_scene` -> :class:`Scene` (objects + expressions, numpy Generator driven)
- :func:`render_scene`, :func:`render_object_mask`, :func:`jpeg_roundtrip`
- :class:`RefShapesStream` (infinite, seeded, worker-aware IterableDataset)
- :func:`write_set` and the CLI ``python -m export.data.refshapes --out DIR --seed N
  --expressions 1000 [--hard]``
- :data:`WORDS`: every word the generator can emit (sorted)
- :func:`referents`: an independent parser/checker of expressions

Modules: spec (constants, config), scene, render, expressions, dataset (stream, set writer), checker.
"""

from __future__ import annotations

from .spec import COLORS, COLOR_NAMES, COMPARATIVE, LOC_FORM1, LOC_FORM2, NOUNS, RELATIONS, RefShapesConfig, SHAPES, SIZE_RANGES, SIZE_WORDS, SUPERLATIVE, THETA_RANGES, TYPES, WORDS, hard_config
from .scene import Expression, Obj, Scene, sample_objects
from .render import encode_jpeg, gaussian_noise, jpeg_roundtrip, object_polygon, render_object_mask, render_scene
from .expressions import generate_scene, iter_scenes, make_expression
from .dataset import RefShapesStream, write_set
from .checker import parse_expression, referents

__all__ = [
    "COLORS",
    "COLOR_NAMES",
    "COMPARATIVE",
    "LOC_FORM1",
    "LOC_FORM2",
    "NOUNS",
    "RELATIONS",
    "RefShapesConfig",
    "SHAPES",
    "SIZE_RANGES",
    "SIZE_WORDS",
    "SUPERLATIVE",
    "THETA_RANGES",
    "TYPES",
    "WORDS",
    "hard_config",
    "Expression",
    "Obj",
    "Scene",
    "sample_objects",
    "encode_jpeg",
    "gaussian_noise",
    "jpeg_roundtrip",
    "object_polygon",
    "render_object_mask",
    "render_scene",
    "generate_scene",
    "iter_scenes",
    "make_expression",
    "RefShapesStream",
    "write_set",
    "parse_expression",
    "referents",
]
