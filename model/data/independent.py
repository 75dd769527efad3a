"""A second renderer of the 12 synthetic classes, written apart from ``model.data.synthetic``, to judge
whether a model learned the motions or the look of the generator it was trained on.

It shares no drawing code, no shapes and no motion laws with the training generator: Pillow draws
anti-aliased glyphs (letters and digits in Pillow's bundled font), stars, rings with a gap, pie slices,
crosses and rounded boxes, filled with flat colours, two-colour gradients or hatching, on backgrounds
made of overlapping Pillow primitives, blurred noise or a vignetted gradient. Objects move along
curved (quadratic Bezier) paths with smooth-step timing, grow and shrink with a perspective law of
their own, turn with a wobble, and scenes get a slow global zoom, salt-and-pepper or Gaussian noise
and a JPEG round-trip per frame. Frame sizes and rates are drawn from other lists (e.g. 5:4, 2:1, 9:16
and 6-29 fps). As in the training set (and in real datasets such as Something-Something), the main
action is framed in the centre, within the square a centre crop keeps.

The odd class of each time-reversed pair (1, 3, 5, 7, 9) is rendered as the frame-reversed clip of
its even partner, so these pairs differ in frame order only, as in ``model.data.synthetic``.

Use: ``python -m model.evaluate GRAPH --renderer independent`` (held-out accuracy on these clips).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

__all__ = ["IndependentClip", "render_independent_clip"]

NUM_CLASSES = 12
_ASPECTS = (5 / 4, 2.0, 16 / 10, 9 / 16, 4 / 5)  # width / height; none is in the training generator's list
_GLYPHS = "FGJKLPQR2457?&"  # no rotational or mirror symmetry: a turn and its direction stay visible
_CENTRE = 0.8  # share of the short side, centred, that the main action stays in


@dataclass(frozen=True)
class IndependentClip:
    frames: np.ndarray  # (F, H, W, 3) uint8 RGB
    label: int
    fps: float


def _random_colour(rng: np.random.Generator, avoid: tuple[int, ...] | None = None) -> tuple[int, int, int]:
    for _ in range(20):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if avoid is None or sum(abs(a - b) for a, b in zip(colour, avoid, strict=True)) > 180:
            break
    return colour  # type: ignore[return-value]


def _fill(rng: np.random.Generator, size: int, first: tuple[int, int, int]) -> Image.Image:
    """An RGB fill pattern for an object: flat, a two-colour gradient or hatching."""
    second = _random_colour(rng, first)
    kind = rng.integers(3)
    if kind == 0:
        return Image.new("RGB", (size, size), first)
    if kind == 1:
        ramp = Image.linear_gradient("L").resize((size, size)).rotate(float(rng.uniform(0, 360)))
        return Image.composite(Image.new("RGB", ramp.size, second), Image.new("RGB", ramp.size, first), ramp)
    image = Image.new("RGB", (size, size), first)
    draw = ImageDraw.Draw(image)
    step = int(rng.integers(4, 10))
    for offset in range(-size, 2 * size, step):
        draw.line([(offset, 0), (offset + size, size)], fill=second, width=max(1, step // 3))
    return image


def _object(rng: np.random.Generator, size: int, background_mean: tuple[int, ...]) -> Image.Image:
    """An RGBA sprite of side ``size`` with an asymmetric shape (a turn of it can be seen)."""
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    kind = rng.integers(6)
    m = size * 0.08
    if kind == 0:  # a glyph
        font = ImageFont.load_default(size=int(size * 0.95))
        glyph = str(rng.choice(list(_GLYPHS)))
        draw.text(
            (size / 2, size / 2),
            glyph,
            fill=255,
            font=font,
            anchor="mm",
            stroke_width=max(1, size // 14),
            stroke_fill=255,
        )
    elif kind == 1:  # a 5- or 7-pointed star with an off-centre hole
        points = int(rng.choice([5, 7]))
        coords = []
        for k in range(2 * points):
            radius = (0.5 if k % 2 == 0 else 0.22) * size - m
            angle = math.pi * k / points
            coords.append((size / 2 + radius * math.cos(angle), size / 2 + radius * math.sin(angle)))
        draw.polygon(coords, fill=255)
        draw.ellipse([size * 0.35, size * 0.35, size * 0.55, size * 0.55], fill=0)
    elif kind == 2:  # a ring with a gap
        width = int(size * rng.uniform(0.12, 0.22))
        start = float(rng.uniform(0, 360))
        draw.arc([m, m, size - m, size - m], start, start + 290, fill=255, width=width)
    elif kind == 3:  # a pie slice
        start = float(rng.uniform(0, 360))
        draw.pieslice([m, m, size - m, size - m], start, start + float(rng.uniform(220, 300)), fill=255)
    elif kind == 4:  # an uneven cross
        t = size * 0.14
        draw.rectangle([m, size / 2 - t, size - m, size / 2 + t], fill=255)
        draw.rectangle([size * 0.3 - t, m, size * 0.3 + t, size - m], fill=255)
    else:  # a rounded box with a notch
        draw.rounded_rectangle([m, size * 0.2, size - m, size * 0.8], radius=size * 0.12, fill=255)
        draw.rectangle([size * 0.55, size * 0.2, size * 0.8, size * 0.45], fill=0)
    colour = _random_colour(rng, tuple(int(c) for c in background_mean))
    sprite = _fill(rng, size, colour).convert("RGBA")
    sprite.putalpha(mask)
    if rng.random() < 0.5:  # a dark rim
        dark = Image.new("RGBA", (size, size), (20, 20, 20, 255))
        dark.putalpha(mask.filter(ImageFilter.MaxFilter(3)))
        return Image.alpha_composite(dark, sprite)
    return sprite


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    kind = rng.integers(3)
    if kind == 0:  # overlapping primitives
        image = Image.new("RGB", (width, height), _random_colour(rng))
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(6, 20))):
            x0, y0 = rng.uniform(-0.2, 1.0) * width, rng.uniform(-0.2, 1.0) * height
            x1, y1 = x0 + rng.uniform(0.1, 0.6) * width, y0 + rng.uniform(0.1, 0.6) * height
            shape = (draw.rectangle, draw.ellipse)[int(rng.integers(2))]
            shape([x0, y0, x1, y1], fill=_random_colour(rng))
        return image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.0, 3.0))))
    if kind == 1:  # blurred colour noise
        coarse = rng.integers(0, 256, (int(rng.integers(3, 12)), int(rng.integers(3, 12)), 3), dtype=np.uint8)
        noise = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
        return Image.blend(
            noise, Image.new("RGB", (width, height), _random_colour(rng)), float(rng.uniform(0.3, 0.7))
        )
    ramp = Image.radial_gradient("L").resize((width, height))  # a vignette between two colours
    return Image.composite(
        Image.new("RGB", (width, height), _random_colour(rng)),
        Image.new("RGB", (width, height), _random_colour(rng)),
        ramp,
    )


def _smoothstep(n: int, rng: np.random.Generator) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)
    if rng.random() < 0.5:
        return t * t * (3.0 - 2.0 * t)
    return np.sin(t * math.pi / 2) ** float(rng.uniform(0.8, 1.6))


def _bezier(p0: np.ndarray, p2: np.ndarray, bend: float, t: np.ndarray) -> np.ndarray:
    """(n, 2) points on the quadratic Bezier curve from p0 to p2 bowed sideways by ``bend`` x its length."""
    mid = (p0 + p2) / 2 + bend * np.array([-(p2 - p0)[1], (p2 - p0)[0]])
    t = t[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * mid + t**2 * p2


@dataclass
class _Track:
    sprite: Image.Image
    centre: np.ndarray  # (n, 2) pixels
    scale: np.ndarray  # (n,) sprite side, pixels
    angle: np.ndarray  # (n,) degrees, counterclockwise (Pillow's convention)


def _tracks(label: int, n: int, short: float, rng: np.random.Generator, make) -> list[_Track]:
    """Main object tracks for a forward label, centred on (0, 0), in pixels."""
    t = _smoothstep(n, rng)
    half = _CENTRE * short / 2
    side = short * rng.uniform(0.2, 0.32)
    wobble = rng.normal(0, short * 0.004, (n, 2)).cumsum(0) * 0.3
    if label in (0, 2):
        travel = rng.uniform(0.45, 0.75) * 2 * (half - side / 2)
        across = rng.uniform(-0.3, 0.3) * (half - side / 2)
        start, end = (
            np.array([-travel / 2, across]),
            np.array([travel / 2, across + rng.uniform(-0.1, 0.1) * travel]),
        )
        if label == 2:  # up: y decreases
            start, end = start[::-1] * [1, -1], end[::-1] * [1, -1]
        path = _bezier(start, end, rng.uniform(-0.15, 0.15), t) + wobble
        return [_Track(make(side), path, np.full(n, side), np.full(n, rng.uniform(0, 360)))]
    if label == 4:  # towards the camera: the apparent size follows 1 / distance
        distance = 1.0 / (1.0 + (rng.uniform(1.6, 2.6) - 1.0) * t)
        small = side * 0.55
        centre = np.outer(t, rng.uniform(-0.1, 0.1, 2) * short) + wobble
        return [
            _Track(
                make(int(small / distance.min()) + 2),
                centre,
                small / distance,
                np.full(n, rng.uniform(0, 360)),
            )
        ]
    if label == 6:  # clockwise on screen = decreasing counterclockwise angle
        turn = rng.uniform(90, 270) * t + np.cumsum(rng.normal(0, 1.0, n))
        centre = rng.uniform(-0.15, 0.15, 2) * short + wobble
        return [
            _Track(
                make(side),
                np.broadcast_to(centre, (n, 2)).copy(),
                np.full(n, side),
                rng.uniform(0, 360) - turn,
            )
        ]
    if label in (8, 10):
        side_a, side_b = side * rng.uniform(0.7, 0.95), side * rng.uniform(0.7, 0.95)
        phi = rng.uniform(-0.6, 0.6) + (math.pi / 2 if rng.random() < 0.25 else 0.0)
        axis = np.array([math.cos(phi), math.sin(phi)])
        normal = np.array([-axis[1], axis[0]]) * rng.uniform(-0.4, 0.4) * side
        far = 2 * half - (side_a + side_b) / 2
        if label == 8:
            gap = far + ((side_a + side_b) * rng.uniform(0.55, 0.75) - far) * t  # ends close, not merged
        else:
            gap = far * (1 - 2 * t)  # crosses, ends mirrored
        share = rng.uniform(0.2, 0.8)  # part of the motion made by object A
        along_a = far * share - gap * share - far / 2
        along_b = far / 2 - (far - gap) * (1 - share)
        fit = min(1.0, far / 2 / max(np.abs(along_a).max(), np.abs(along_b).max()))  # stay in the centre
        centre_a = np.outer(along_a * fit, axis) + normal
        centre_b = np.outer(along_b * fit, axis) - normal
        return [
            _Track(make(int(side_a)), centre_a + wobble, np.full(n, side_a), np.full(n, rng.uniform(0, 360))),
            _Track(make(int(side_b)), centre_b - wobble, np.full(n, side_b), np.full(n, rng.uniform(0, 360))),
        ]
    if label == 11:  # holding: a hand tremor, nothing else
        centre = rng.uniform(-0.2, 0.2, 2) * short + rng.normal(0, short * 0.006, (n, 2))
        return [_Track(make(side), centre, np.full(n, side), rng.uniform(0, 360) + rng.normal(0, 2.0, n))]
    raise ValueError(f"not a forward label: {label}")


def render_independent_clip(
    label: int, rng: np.random.Generator, *, short_side: int = 160
) -> IndependentClip:
    """Render one clip of class ``label`` (0-11, the ``SYNTHETIC_LABELS`` order) from ``rng``."""
    if not 0 <= label < NUM_CLASSES:
        raise ValueError(f"label must be in [0, {NUM_CLASSES}), got {label}")
    forward = label - 1 if label < 10 and label % 2 else label
    fps = float(rng.integers(6, 30))
    n = max(3, round(rng.uniform(1.8, 3.6) * fps))
    aspect = float(rng.choice(_ASPECTS))
    width, height = (
        (round(short_side * aspect), short_side) if aspect >= 1 else (short_side, round(short_side / aspect))
    )
    width += width % 2
    height += height % 2
    background = _background(rng, width, height)
    background_mean = tuple(int(c) for c in np.asarray(background).reshape(-1, 3).mean(0))

    def make(size: int) -> Image.Image:
        return _object(rng, max(int(size), 8), background_mean)

    tracks = _tracks(forward, n, float(short_side), rng, make)
    distractors = [
        _Track(
            make(int(short_side * rng.uniform(0.06, 0.12))),
            rng.uniform([-width / 2, -height / 2], [width / 2, height / 2])
            + np.outer(np.arange(n), rng.normal(0, 0.3, 2)),
            np.full(n, short_side * rng.uniform(0.06, 0.12)),
            np.full(n, rng.uniform(0, 360)),
        )
        for _ in range(int(rng.integers(0, 3)))
    ]
    zoom = 1.0 + rng.uniform(-0.06, 0.06) * np.linspace(0, 1, n)  # a slow global zoom
    noise = float(rng.uniform(0, 8))
    salt = rng.random() < 0.2
    quality = int(rng.integers(35, 95))
    frames = np.empty((n, height, width, 3), np.uint8)
    for f in range(n):
        canvas = background.copy()
        for track in distractors + tracks:
            side = max(round(float(track.scale[f] * zoom[f])), 2)
            sprite = track.sprite.resize((side, side), Image.Resampling.BILINEAR)
            sprite = sprite.rotate(float(track.angle[f]), resample=Image.Resampling.BICUBIC, expand=True)
            x = width / 2 + track.centre[f, 0] * zoom[f] - sprite.width / 2
            y = height / 2 + track.centre[f, 1] * zoom[f] - sprite.height / 2
            canvas.paste(sprite, (round(float(x)), round(float(y))), sprite)
        pixels = np.asarray(canvas, np.float32)
        if noise > 1:
            pixels = pixels + rng.normal(0, noise, pixels.shape)
        if salt:
            dots = rng.random(pixels.shape[:2]) < 0.004
            pixels[dots] = rng.choice([0.0, 255.0], (int(dots.sum()), 1))
        buffer = io.BytesIO()
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=quality)
        frames[f] = np.asarray(Image.open(buffer).convert("RGB"))
    if forward != label:
        frames = frames[::-1].copy()
    return IndependentClip(frames=frames, label=label, fps=fps)
