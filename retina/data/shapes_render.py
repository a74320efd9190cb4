"""Drawing the synthetic "shapes" images: outlines, rasterisation, textured backgrounds, painting.

What an image holds, so that it is a real detection problem rather than a toy:

- :data:`SHAPES_CLASSES`: eight classes that differ only by shape; every object's colour comes from the same
  distribution whatever its class, so colour carries no information;
- object scales are log-uniform from 12 px to 60 % of the image side, so that every level P3-P7 of a RetinaNet
  (anchor sizes 32..512 px at 256 px input, after the usual up-scaling) gets objects; each object is stretched
  by up to 2:1 and rotated by any angle;
- 0-10 objects per image, with about 5 % of the images empty; objects overlap and occlude each other in drawing
  order; an object with less than 30 % of its area visible (hidden by later ones or outside the image) is not
  drawn at all, so no label is invisible and nothing unlabelled is drawn;
- backgrounds are textured: colour gradients, smooth colour clouds, stripes (soft or hard-edged), soft blobs, and
  pixel noise over everything;
- each box is the tight box of the *whole* drawn shape (occluded parts included), computed from the exact polygon
  geometry and clipped to the image, then rounded to whole pixels. Shapes are anti-aliased (4x supersampling).

`render_image(size, rng)` draws one image from a random generator and nothing else: the same generator state gives
the same pixels. Writing a dataset of such images to disk is :mod:`retina.data.shapes`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["GENERATOR_VERSION", "SHAPES_CLASSES", "rasterize", "render_image", "shape_outline"]

GENERATOR_VERSION = 1  # bump when the images change, so old datasets on disk are regenerated
MIN_SIZE = 12.0  # px: the smallest object scale
MAX_SIZE_FRACTION = 0.6  # of the image side: the largest object scale
MAX_STRETCH = 2.0  # largest width:height ratio of an object before rotation
MAX_OBJECTS = 10
EMPTY_FRACTION = 0.05
MIN_VISIBLE = 0.3  # an object less visible than this is not drawn
SUPERSAMPLE = 4
_COARSE = 64  # side of the grid the smooth background textures are drawn on


def _circle(radius: float = 1.0, center: tuple[float, float] = (0.0, 0.0), n: int = 48) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return np.stack([center[0] + radius * np.cos(t), center[1] + radius * np.sin(t)], axis=1)


def _regular(n: int, radii: tuple[float, ...] = (1.0,)) -> np.ndarray:
    """A regular polygon (one radius) or star (alternating radii), pointing up."""
    k = n * len(radii)
    t = -np.pi / 2 + 2.0 * np.pi * np.arange(k) / k
    r = np.resize(np.array(radii), k)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _crescent() -> np.ndarray:
    # The unit disc minus a disc of radius 0.8 centred at (0.6, 0): the two circles cross at (0.6, +-0.8).
    start = math.atan2(0.8, 0.6)
    outer = np.linspace(start, 2.0 * np.pi - start, 40)
    inner = np.linspace(1.5 * np.pi, 0.5 * np.pi, 24)
    return np.concatenate(
        [np.stack([np.cos(outer), np.sin(outer)], 1), np.stack([0.6 + 0.8 * np.cos(inner), 0.8 * np.sin(inner)], 1)]
    )


def _heart() -> np.ndarray:
    t = np.linspace(0.0, 2.0 * np.pi, 64, endpoint=False)
    x = 16.0 * np.sin(t) ** 3
    y = 13.0 * np.cos(t) - 5.0 * np.cos(2 * t) - 2.0 * np.cos(3 * t) - np.cos(4 * t)
    return np.stack([x, -y], axis=1)  # image y points down


def _cross(half_width: float = 0.32) -> np.ndarray:
    a, b = half_width, 1.0
    return np.array(
        [(a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b), (-a, a), (-b, a), (-b, -a), (-a, -a), (-a, -b)]
    )


def _normalise(parts: list[tuple[np.ndarray, bool]]) -> list[tuple[np.ndarray, bool]]:
    """Map the outline so the outer polygon spans exactly [-1, 1] on both axes: the scale and stretch drawn for an
    object then mean the same for every class."""
    outer = parts[0][0]
    low, high = outer.min(axis=0), outer.max(axis=0)
    return [((points - (low + high) / 2) / ((high - low) / 2), filled) for points, filled in parts]


# Each class is a list of (unit-frame polygon [k, 2], filled) drawn in order; filled=False cuts a hole.
_OUTLINES: dict[str, list[tuple[np.ndarray, bool]]] = {
    name: _normalise(parts)
    for name, parts in {
        "circle": [(_circle(), True)],
        "square": [(np.array([(-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0)]), True)],
        "triangle": [(_regular(3), True)],
        "star": [(_regular(5, (1.0, 0.42)), True)],
        "cross": [(_cross(), True)],
        "ring": [(_circle(), True), (_circle(0.55), False)],
        "crescent": [(_crescent(), True)],
        "heart": [(_heart(), True)],
    }.items()
}
SHAPES_CLASSES = list(_OUTLINES)


def _polygon_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


# Area of each unit-frame outline (holes subtracted), to tell how much of an object is visible.
_UNIT_AREAS = {
    name: sum(_polygon_area(p) if filled else -_polygon_area(p) for p, filled in parts)
    for name, parts in _OUTLINES.items()
}


def shape_outline(
    label: int, cx: float, cy: float, width: float, height: float, angle: float
) -> list[tuple[np.ndarray, bool]]:
    """The polygons of class ``label`` stretched to ``width`` x ``height`` px, rotated by ``angle`` radians and
    centred at ``(cx, cy)``: a list of ``(vertices [k, 2], filled)``, the first being the outer outline."""
    cos, sin = math.cos(angle), math.sin(angle)
    rotation = np.array([[cos, sin], [-sin, cos]])
    scale = np.array([width / 2.0, height / 2.0])
    return [((points * scale) @ rotation + (cx, cy), filled) for points, filled in _OUTLINES[SHAPES_CLASSES[label]]]


def rasterize(polygons: list[tuple[np.ndarray, bool]], size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Anti-aliased coverage of ``polygons`` on a ``size`` x ``size`` image.

    Returns ``(coverage, (x0, y0))``: ``coverage`` is float32 ``[h, w]`` in [0, 1] for the pixel window whose
    top-left pixel is ``(x0, y0)`` (only the window that can be non-zero is drawn, which keeps small shapes cheap).
    """
    outer = polygons[0][0]
    x0, y0 = np.clip(np.floor(outer.min(axis=0)).astype(int), 0, size)
    x1, y1 = np.clip(np.ceil(outer.max(axis=0)).astype(int), 0, size)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((0, 0), np.float32), (int(x0), int(y0))
    s = SUPERSAMPLE
    canvas = Image.new("L", (int(x1 - x0) * s, int(y1 - y0) * s), 0)
    draw = ImageDraw.Draw(canvas)
    for points, filled in polygons:
        # PIL fills the sub-pixels whose (floored) index lies inside; -0.5 centres that on sub-pixel centres.
        local = (points - (x0, y0)) * s - 0.5
        draw.polygon([tuple(p) for p in local.tolist()], fill=255 if filled else 0)
    coverage = np.asarray(canvas.reduce(s), dtype=np.float32) / 255.0  # mean over each s x s block
    return coverage, (int(x0), int(y0))


@dataclass
class _Object:
    label: int
    box: tuple[int, int, int, int]  # tight, clipped to the image, whole pixels
    truncated: bool  # part of the shape lies outside the image
    area: float  # of the whole shape, inside the image or not
    coverage: np.ndarray
    origin: tuple[int, int]


def _random_object(rng: np.random.Generator, size: int) -> _Object | None:
    label = int(rng.integers(len(SHAPES_CLASSES)))
    scale = math.exp(rng.uniform(math.log(MIN_SIZE), math.log(max(MIN_SIZE, MAX_SIZE_FRACTION * size))))
    stretch = math.exp(rng.uniform(-math.log(MAX_STRETCH), math.log(MAX_STRETCH)))
    width, height = scale * math.sqrt(stretch), scale / math.sqrt(stretch)
    angle = rng.uniform(0.0, 2.0 * math.pi)
    cx, cy = rng.uniform(0.0, size, 2)
    polygons = shape_outline(label, cx, cy, width, height, angle)

    outer = polygons[0][0]
    low, high = outer.min(axis=0), outer.max(axis=0)
    x1, y1 = np.rint(np.clip(low, 0, size)).astype(int)
    x2, y2 = np.rint(np.clip(high, 0, size)).astype(int)
    if x2 - x1 < 2 or y2 - y1 < 2:
        return None
    coverage, origin = rasterize(polygons, size)
    truncated = bool((low < 0).any() or (high > size).any())
    area = _UNIT_AREAS[SHAPES_CLASSES[label]] * width * height / 4.0
    return _Object(label, (int(x1), int(y1), int(x2), int(y2)), truncated, area, coverage, origin)


def _window(obj: _Object) -> tuple[slice, slice]:
    (x0, y0), (h, w) = obj.origin, obj.coverage.shape
    return slice(y0, y0 + h), slice(x0, x0 + w)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A textured float32 ``[size, size, 3]`` background in 0..255."""

    def along(theta: float, n: int) -> np.ndarray:
        ramp = np.arange(n, dtype=np.float32) / n
        return ramp[None, :] * math.cos(theta) + ramp[:, None] * math.sin(theta)

    # The smooth parts (gradient, colour clouds, soft blobs) are drawn on a coarse grid and upsampled: the same
    # look at a fraction of the cost.
    n = _COARSE
    start, end = rng.uniform(0.0, 255.0, (2, 3)).astype(np.float32)
    t = along(rng.uniform(0.0, 2.0 * math.pi), n)
    t = (t - t.min()) / (t.max() - t.min())
    smooth = start + (end - start) * t[..., None]

    cells = int(rng.integers(2, 9))
    clouds = Image.fromarray(rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8)).resize((n, n), Image.BICUBIC)
    smooth += (np.asarray(clouds, dtype=np.float32) - 127.5) * rng.uniform(0.1, 0.6)

    if rng.random() < 0.4:
        ramp = (np.arange(n, dtype=np.float32) + 0.5) / n
        for _ in range(int(rng.integers(1, 6))):
            cx, cy = rng.uniform(0.0, 1.0, 2)
            sigma = rng.uniform(0.03, 0.2)
            blob = np.exp(-((ramp[None, :] - cx) ** 2 + (ramp[:, None] - cy) ** 2) / (2.0 * sigma**2))
            smooth += blob[..., None] * rng.uniform(-90.0, 90.0, 3).astype(np.float32)

    smooth = Image.fromarray(np.clip(smooth, 0, 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    image = np.asarray(smooth, dtype=np.float32)  # a fresh, writable array

    if rng.random() < 0.4:
        cycles = rng.uniform(2.0, 16.0)
        wave = np.sin(2.0 * math.pi * cycles * along(rng.uniform(0.0, math.pi), size) + rng.uniform(0.0, 2.0 * math.pi))
        if rng.random() < 0.5:
            wave = np.sign(wave)  # hard-edged stripes: straight edges that are not objects
        image += wave[..., None] * rng.uniform(-50.0, 50.0, 3).astype(np.float32)
    return image


def _paint(image: np.ndarray, obj: _Object, rng: np.random.Generator) -> None:
    """Composite ``obj`` onto ``image`` in a random colour that stands out from what lies beneath it."""
    rows, cols = _window(obj)
    region, alpha = image[rows, cols], obj.coverage[..., None]
    beneath = (region * alpha).sum(axis=(0, 1)) / max(float(alpha.sum()), 1e-6)
    candidates = rng.uniform(0.0, 255.0, (8, 3)).astype(np.float32)
    contrast = np.linalg.norm(candidates - beneath, axis=1)
    good = np.flatnonzero(contrast > 90.0)
    colour = candidates[good[0] if len(good) else int(np.argmax(contrast))]

    # A gentle shading ramp across the object, so objects are not flat stickers.
    h, w = obj.coverage.shape
    theta = rng.uniform(0.0, 2.0 * math.pi)
    xs, ys = np.arange(w, dtype=np.float32) * math.cos(theta), np.arange(h, dtype=np.float32) * math.sin(theta)
    ramp = (xs[None, :] + ys[:, None]) / max(h, w)
    shade = 1.0 + rng.uniform(-0.35, 0.35) * (ramp - ramp.mean())
    image[rows, cols] = region * (1.0 - alpha) + np.clip(colour * shade[..., None], 0.0, 255.0) * alpha


def render_image(size: int, rng: np.random.Generator) -> tuple[np.ndarray, list[dict]]:
    """Draw one image. Returns ``(pixels, objects)``: uint8 ``[size, size, 3]`` RGB and, in drawing order, one dict
    per object: ``label``, ``box`` (xyxy whole pixels), ``area`` (visible pixels) and ``truncated``."""
    image = _background(rng, size)
    count = 0 if rng.random() < EMPTY_FRACTION else int(rng.integers(1, MAX_OBJECTS + 1))
    candidates = [obj for obj in (_random_object(rng, size) for _ in range(count)) if obj is not None]

    # Walk from the top of the stack down: an object's visible part is what later (kept) objects leave uncovered.
    uncovered = np.ones((size, size), np.float32)
    kept, visible = [], []
    for obj in reversed(candidates):
        rows, cols = _window(obj)
        seen = float((obj.coverage * uncovered[rows, cols]).sum())
        if seen >= MIN_VISIBLE * obj.area:
            uncovered[rows, cols] *= 1.0 - obj.coverage
            kept.append(obj)
            visible.append(seen)

    objects = []
    for obj, seen in zip(reversed(kept), reversed(visible), strict=True):
        _paint(image, obj, rng)
        objects.append({"label": obj.label, "box": obj.box, "area": round(seen, 1), "truncated": obj.truncated})

    image += rng.standard_normal((size, size, 1), dtype=np.float32) * rng.uniform(2.0, 10.0)  # sensor noise
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), objects
