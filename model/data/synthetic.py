"""A procedurally generated temporal-reasoning video dataset in the Something-Something-V2 mould.

Twelve classes (``SYNTHETIC_LABELS``), rendered with numpy alone. Classes 0-9 are five time-reversed pairs:
a clip of the odd member is *exactly* the frame-reversed clip of the even member rendered from the same
random stream (``render_clip(2k + 1, rng).frames == render_clip(2k, rng_copy).frames[::-1]``), so every
nuisance factor (appearance, camera, noise, distractors) has the same distribution in both members and a
model that ignores frame order cannot beat chance inside a pair. Class 10 (two objects pass each other)
is built from the same ingredients as 8/9 (same separations, offsets and overlaps): on its own, a frame
looks like a frame of 8 or 9, and only the motion (the gap closes, then opens with the objects swapped)
tells them apart. Class 11 holds the object still up to hand shake.

Appearance is randomised hard so that a model learns the motion: object shapes (ellipse, rectangle,
triangle, random polygon, arrow, L, T, blob), textures (solid, stripes, checkerboard, blocky noise,
low-pass noise, gradients, with shading and an optional marker), colours, sizes, backgrounds (solid,
gradient, fine noise, low-pass, wallpaper, table/wall split, optionally cluttered with static shapes),
an optional arm holding the object, distractors (smaller, with bounded random motion), a static foreground
occluder, speeds and speed profiles (linear, ease-in/out, still frames at either end), durations
1.5-4 s, frame rates 8-30 fps, aspect ratios (16:9, 3:2, 4:3, 1:1, 3:4), camera shake, brightness and
colour drift, sensor noise and blur. The main action happens inside the centred square of side
``ACTION_SQUARE`` x the short side, the region the paper's centre crop keeps (224 of 256), so that a
centre-cropped model can see it; the rest of the frame holds the clutter and the distractors.

Coordinates: x to the right, y *down* (image convention). An in-plane angle increasing in these coordinates
turns a shape *clockwise* as a viewer sees it (the +x axis turns towards +y, i.e. from 3 o'clock to 6).

``write_something_something_v2`` writes the dataset in the SSv2 distribution layout (``labels.json``,
``train.json``, ``validation.json``, ``videos/<id>.webm`` VP9); see its docstring for the exact format.

CLI: ``python -m model.data.synthetic --out DIR --train 1000 --val 200 --seed 0 [--preview sheet.png]``.
"""

from __future__ import annotations

import argparse
import colorsys
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

__all__ = [
    "FLIP_PAIRS",
    "SYNTHETIC_LABELS",
    "SYNTHETIC_TEMPLATES",
    "SyntheticClip",
    "generate",
    "render_clip",
    "write_something_something_v2",
]

SYNTHETIC_LABELS: tuple[str, ...] = (
    "Pushing something from left to right",
    "Pushing something from right to left",
    "Moving something up",
    "Moving something down",
    "Moving something towards the camera",
    "Moving something away from the camera",
    "Turning something clockwise",
    "Turning something counterclockwise",
    "Moving something and something closer to each other",
    "Moving something and something away from each other",
    "Moving something and something so they pass each other",
    "Holding something",
)
# SSv2 templates: the label with every "something" in brackets.
SYNTHETIC_TEMPLATES: tuple[str, ...] = tuple(
    " ".join("[something]" if w == "something" else w for w in label.split(" ")) for label in SYNTHETIC_LABELS
)
# Class that a horizontally flipped clip belongs to (classes not listed keep their class).
FLIP_PAIRS: dict[int, int] = {0: 1, 1: 0, 6: 7, 7: 6}

NUM_CLASSES = len(SYNTHETIC_LABELS)
_REVERSED = {1: 0, 3: 2, 5: 4, 7: 6, 9: 8}  # odd member -> the even member it is the time reversal of
_FPS_CHOICES = (8.0, 10.0, 12.0, 15.0, 20.0, 24.0, 25.0, 30.0)
_ASPECTS = (16 / 9, 3 / 2, 4 / 3, 1.0, 3 / 4)  # width / height
ACTION_SQUARE = 0.875  # the main action's region: this share of the short side, centred (224 / 256)
_SPRITE = 48  # sprite texels per side for objects
_PLAIN_BG = (128.0, 128.0, 128.0)
PLAIN_COLOURS = ((230.0, 30.0, 30.0), (30.0, 30.0, 230.0))  # object A, object B in a plain render


@dataclass(frozen=True)
class SyntheticClip:
    frames: np.ndarray  # (F, H, W, 3) uint8 RGB; only the selected ones when rendered with ``select``
    label: int
    fps: float
    length: int = 0  # frames in the whole clip (``len(frames)`` unless rendered with ``select``)


# --------------------------------------------------------------------------------------------- helpers
def _interp_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) bilinear weights resampling n_in control points over n_out pixels (ends aligned)."""
    pos = np.linspace(0.0, n_in - 1.0, n_out, dtype=np.float32)
    lo = np.minimum(pos.astype(np.int32), n_in - 2) if n_in > 1 else np.zeros(n_out, np.int32)
    frac = pos - lo
    m = np.zeros((n_out, n_in), np.float32)
    rows = np.arange(n_out)
    if n_in == 1:
        m[:, 0] = 1.0
        return m
    m[rows, lo] = 1.0 - frac
    m[rows, lo + 1] += frac
    return m


def _upsample(grid: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear upsampling of a (gh, gw, C) grid to (h, w, C)."""
    my = _interp_matrix(grid.shape[0], h)
    mx = _interp_matrix(grid.shape[1], w)
    tmp = np.tensordot(my, grid, axes=(1, 0))  # (h, gw, C)
    return np.einsum("wj,hjc->hwc", mx, tmp, optimize=False).astype(np.float32)


def _smooth_noise(n: int, rng: np.random.Generator, amp: float, corr: float) -> np.ndarray:
    """Stationary Gaussian noise (time-reversible), std ~ amp, correlation length ~ corr samples."""
    sigma = max(corr, 0.5)
    half = int(3 * sigma) + 1
    k = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
    k /= np.sqrt((k**2).sum())
    white = rng.standard_normal(n + 2 * half)
    return amp * np.convolve(white, k, mode="valid")[:n]


def _progress(n: int, rng: np.random.Generator) -> np.ndarray:
    """Monotone 0 -> 1 over n frames: random profile, optionally still frames at either end."""
    lead = rng.uniform(0.0, 0.18) if rng.random() < 0.5 else 0.0
    tail = rng.uniform(0.0, 0.18) if rng.random() < 0.5 else 0.0
    t = np.linspace(0.0, 1.0, n)
    t = np.clip((t - lead) / max(1.0 - lead - tail, 0.3), 0.0, 1.0)
    kind = rng.integers(4)
    if kind == 1:  # ease in and out
        t = t * t * (3.0 - 2.0 * t)
    elif kind == 2:  # ease in
        g = rng.uniform(1.4, 2.2)
        t = t**g
    elif kind == 3:  # ease out
        g = rng.uniform(1.4, 2.2)
        t = 1.0 - (1.0 - t) ** g
    return t


def _colour(rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.6:
        rgb = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.25, 1.0), rng.uniform(0.25, 1.0))
        return np.array(rgb, np.float32) * 255.0
    return rng.uniform(0.0, 255.0, 3).astype(np.float32)


def _contrasting(rng: np.random.Generator, avoid: np.ndarray, min_dist: float = 90.0) -> np.ndarray:
    best, best_d = None, -1.0
    for _ in range(12):
        c = _colour(rng)
        d = float(np.linalg.norm(c - avoid))
        if d >= min_dist:
            return c
        if d > best_d:
            best, best_d = c, d
    return best


def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(n, dtype=np.float32) + 0.5) / n * 2.0 - 1.0
    return np.meshgrid(c, c)  # u (x) varies along columns, v (y) along rows


def _in_polygon(u: np.ndarray, v: np.ndarray, pts: np.ndarray) -> np.ndarray:
    inside = np.zeros(u.shape, bool)
    xj, yj = pts[-1]
    for xi, yi in pts:
        if yi != yj:
            cross = ((yi > v) != (yj > v)) & (u < (xj - xi) * (v - yi) / (yj - yi) + xi)
            inside ^= cross
        xj, yj = xi, yi
    return inside


def _box3(a: np.ndarray) -> np.ndarray:
    """3x3 box blur of a 2-D array (edge replicated)."""
    p = np.pad(a, 1, mode="edge")
    r = (p[:-2] + p[1:-1] + p[2:]) / 3.0
    return ((r[:, :-2] + r[:, 1:-1] + r[:, 2:]) / 3.0).astype(np.float32)


SHAPES = ("ellipse", "rectangle", "triangle", "polygon", "arrow", "L", "T", "blob")
_SYMMETRIC = {"ellipse", "rectangle"}  # look the same after half a turn: get a marker when turning


def _shape_mask(kind: str, rng: np.random.Generator, n: int) -> np.ndarray:
    u, v = _grid(n)
    if kind == "ellipse":
        a, b = 0.92, 0.92 * rng.uniform(0.45, 0.95)
        m = (u / a) ** 2 + (v / b) ** 2 <= 1.0
    elif kind == "rectangle":
        a, b = 0.9, 0.9 * rng.uniform(0.35, 0.9)
        m = (np.abs(u) <= a) & (np.abs(v) <= b)
    elif kind == "triangle":
        ang = rng.uniform(0, 2 * np.pi) + np.array([0.0, 2.1, 4.2]) + rng.uniform(-0.4, 0.4, 3)
        m = _in_polygon(u, v, 0.92 * np.stack([np.cos(ang), np.sin(ang)], 1))
    elif kind == "polygon":
        k = int(rng.integers(5, 9))
        ang = np.sort(rng.uniform(0, 2 * np.pi, k))
        rad = rng.uniform(0.45, 0.95, k)
        m = _in_polygon(u, v, np.stack([rad * np.cos(ang), rad * np.sin(ang)], 1))
    elif kind == "arrow":
        w, hw, hl = rng.uniform(0.14, 0.3), rng.uniform(0.4, 0.7), rng.uniform(0.35, 0.7)
        tip, base = 0.92, 0.92 - hl
        pts = [(-0.92, -w), (base, -w), (base, -hw), (tip, 0.0), (base, hw), (base, w), (-0.92, w)]
        m = _in_polygon(u, v, np.array(pts))
    elif kind == "L":
        t1, t2 = rng.uniform(0.25, 0.5), rng.uniform(0.25, 0.5)
        a, b = 0.9, 0.9 * rng.uniform(0.6, 1.0)
        pts = [
            (-a, -b),
            (-a + t1 * 2 * a / 2, -b),
            (-a + t1 * a, b - t2 * b),
            (a, b - t2 * b),
            (a, b),
            (-a, b),
        ]
        m = _in_polygon(u, v, np.array(pts))
    elif kind == "T":
        t1, t2 = rng.uniform(0.18, 0.35), rng.uniform(0.25, 0.45)
        a = 0.9
        pts = [(-a, -a), (a, -a), (a, -a + 2 * t2), (t1, -a + 2 * t2), (t1, a), (-t1, a), (-t1, -a + 2 * t2)]
        pts.append((-a, -a + 2 * t2))
        m = _in_polygon(u, v, np.array(pts))
    else:  # blob
        phi, rho = np.arctan2(v, u), np.hypot(u, v)
        r = np.full_like(u, 0.62)
        for k in (2, 3, 4):
            r += rng.uniform(0.0, 0.16) * np.cos(k * phi + rng.uniform(0, 2 * np.pi))
        m = rho <= np.minimum(r, 0.95)
    if rng.random() < 0.5:
        m = m[:, ::-1]  # mirror image (L vs J ...)
    return _box3(m.astype(np.float32))


def _texture(rng: np.random.Generator, n: int, h: int, base: np.ndarray, second: np.ndarray) -> np.ndarray:
    """(h, n, 3) texture mixing colours ``base`` and ``second`` (n columns, h rows)."""
    c = (np.arange(n, dtype=np.float32) + 0.5) / n * 2.0 - 1.0
    r = (np.arange(h, dtype=np.float32) + 0.5) / n * 2.0 - h / n  # same scale as the columns
    u, v = np.meshgrid(c, r)
    kind = rng.choice(6, p=[0.22, 0.16, 0.1, 0.14, 0.22, 0.16])
    beta = rng.uniform(0, np.pi)
    along = np.cos(beta) * u + np.sin(beta) * v
    if kind == 0:  # solid
        t = np.zeros_like(u)
    elif kind == 1:  # stripes at a random angle
        t = (np.sin(along * np.pi * rng.uniform(1.5, 5.0)) > rng.uniform(-0.5, 0.5)).astype(np.float32)
    elif kind == 2:  # checkerboard
        across = -np.sin(beta) * u + np.cos(beta) * v
        k = rng.uniform(1.5, 4.0)
        t = ((np.floor(along * k) + np.floor(across * k)) % 2).astype(np.float32)
    elif kind == 3:  # blocky / fine noise
        g = int(rng.integers(4, 17))
        t = np.repeat(np.repeat(rng.random((g, g)), -(-h // g), 0), -(-n // g), 1)[:h, :n].astype(np.float32)
    elif kind == 4:  # smooth low-pass noise
        g = int(rng.integers(2, 6))
        t = _upsample(rng.random((g, g, 1)), h, n)[..., 0]
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-3)
    else:  # gradient
        t = (along + 1.5) / 3.0
    tex = base + t[..., None] * (second - base)
    shade = 1.0 + rng.uniform(-0.25, 0.25) * u + rng.uniform(-0.25, 0.25) * v
    return (tex * shade[..., None]).astype(np.float32)


@dataclass
class _Sprite:
    rgb: np.ndarray  # (N+2, N+2, 3) float32, zero border
    alpha: np.ndarray  # (N+2, N+2) float32, zero border
    name: str = "object"

    def __post_init__(self) -> None:
        self.rgb_flat = np.ascontiguousarray(self.rgb, np.float32).reshape(-1, 3)
        self.alpha_flat = np.ascontiguousarray(self.alpha, np.float32).reshape(-1)


def _make_sprite(rgb: np.ndarray, alpha: np.ndarray, name: str = "object") -> _Sprite:
    return _Sprite(np.pad(rgb, ((1, 1), (1, 1), (0, 0))), np.pad(alpha, 1), name)


def _object_sprite(
    rng: np.random.Generator, avoid: np.ndarray, *, shapes: Sequence[str] = SHAPES, marker: bool = False
) -> _Sprite:
    kind = str(rng.choice(list(shapes)))
    alpha = _shape_mask(kind, rng, _SPRITE)
    c1 = _contrasting(rng, avoid)
    c2 = c1 + rng.uniform(-110, 110, 3) if rng.random() < 0.6 else _colour(rng)
    rgb = _texture(rng, _SPRITE, _SPRITE, c1, np.clip(c2, 0, 255).astype(np.float32))
    if marker or rng.random() < 0.3:  # a contrasting spot off-centre
        u, v = _grid(_SPRITE)
        cu, cv = rng.uniform(-0.55, 0.55, 2)
        if abs(cu) + abs(cv) < 0.35:
            cu = 0.5
        spot = (u - cu) ** 2 + (v - cv) ** 2 <= rng.uniform(0.18, 0.3) ** 2
        rgb[spot] = 255.0 - rgb[spot].mean(0)
    if rng.random() < 0.3:  # dark outline
        edge = (alpha > 0.05) & (_box3(alpha) < 0.8)
        rgb[edge] *= 0.35
    return _make_sprite(rgb, alpha, kind)


def _solid_sprite(colour: Sequence[float], kind: str, rng: np.random.Generator) -> _Sprite:
    alpha = _shape_mask(kind, rng, _SPRITE)
    return _make_sprite(np.broadcast_to(np.asarray(colour, np.float32), (_SPRITE, _SPRITE, 3)).copy(), alpha)


def _paste(canvas: np.ndarray, spr: _Sprite, cx: float, cy: float, ru: float, rv: float, ang: float) -> None:
    """Alpha-composite ``spr`` onto ``canvas`` (H, W, 3) float32 in place.

    The sprite's [-1, 1]^2 square is mapped to the rectangle of half-sizes (ru, rv) rotated by ``ang``
    (clockwise on screen for ang > 0) around (cx, cy); pixels are inverse-mapped, nearest texel.
    """
    c, s = math.cos(ang), math.sin(ang)
    hx, hy = abs(c) * ru + abs(s) * rv, abs(s) * ru + abs(c) * rv
    hgt, wid = canvas.shape[:2]
    x0, x1 = max(int(cx - hx), 0), min(int(cx + hx) + 2, wid)
    y0, y1 = max(int(cy - hy), 0), min(int(cy + hy) + 2, hgt)
    if x0 >= x1 or y0 >= y1:
        return
    n = spr.alpha.shape[0] - 2
    ku, kv = 0.5 * n / ru, 0.5 * n / rv
    dx = np.arange(x0, x1, dtype=np.float32) - np.float32(cx)
    dy = np.arange(y0, y1, dtype=np.float32) - np.float32(cy)
    fu = np.add.outer(dy * np.float32(s * ku), dx * np.float32(c * ku) + np.float32(0.5 * n + 1))
    fv = np.add.outer(dy * np.float32(c * kv), dx * np.float32(-s * kv) + np.float32(0.5 * n + 1))
    np.minimum(np.maximum(fu, 0, out=fu), n + 1, out=fu)  # outside the sprite -> its zero-alpha border
    np.minimum(np.maximum(fv, 0, out=fv), n + 1, out=fv)
    k = fv.astype(np.intp)
    k *= n + 2
    k += fu.astype(np.intp)
    a = spr.alpha_flat.take(k)
    col = spr.rgb_flat.take(k, axis=0)
    reg = canvas[y0:y1, x0:x1]
    col -= reg
    col *= a[..., None]
    reg += col


# --------------------------------------------------------------------------------------------- scenes
@dataclass
class _Actor:
    sprite: _Sprite
    x: np.ndarray  # (F,) centre, pixels
    y: np.ndarray
    radius: np.ndarray  # (F,) sprite half-size, pixels
    angle: np.ndarray  # (F,) radians, clockwise on screen
    arm: tuple[_Sprite, float, float] | None = None  # sprite, direction (rad), width factor
    aspect: float = 1.0  # rv / ru of the sprite square


@dataclass
class _Scene:
    width: int
    height: int
    n: int
    main: list[_Actor] = field(default_factory=list)
    behind: list[_Actor] = field(default_factory=list)
    front: list[_Actor] = field(default_factory=list)


def _shake(n: int, rng: np.random.Generator, s: float, amp: float) -> tuple[np.ndarray, np.ndarray]:
    corr = rng.uniform(1.0, 4.0)
    return _smooth_noise(n, rng, amp * s, corr), _smooth_noise(n, rng, amp * s, corr)


def _fit(
    actors: list[_Actor], width: int, height: int, rng: np.random.Generator, extent: float = 0.75
) -> None:
    """Translate the actors together to a random place where their whole paths stay (mostly) in frame."""
    xs = [np.concatenate([a.x - extent * a.radius, a.x + extent * a.radius]) for a in actors]
    ys = [np.concatenate([a.y - extent * a.radius, a.y + extent * a.radius]) for a in actors]
    lo_x, hi_x = min(x.min() for x in xs), max(x.max() for x in xs)
    lo_y, hi_y = min(y.min() for y in ys), max(y.max() for y in ys)
    span_x, span_y = hi_x - lo_x, hi_y - lo_y
    ox = rng.uniform(0, width - span_x) if span_x < width else (width - span_x) / 2
    oy = rng.uniform(0, height - span_y) if span_y < height else (height - span_y) / 2
    for a in actors:
        a.x += ox - lo_x
        a.y += oy - lo_y


def _main_actors(
    label: int, n: int, w: float, h: float, rng: np.random.Generator, make_sprite, size: float
) -> list[_Actor]:
    """Trajectories of the main object(s) for a *forward* class label (0, 2, 4, 6, 8, 10 or 11), inside a
    ``w`` x ``h`` region; object sizes, speeds of the shake and drift scale with ``size`` (the short side)."""
    s = float(size)
    p = _progress(n, rng)
    wob_amp = rng.uniform(0.0, 0.012)
    ones = np.ones(n)

    def single(radius: float, shapes_marker: bool = False) -> _Actor:
        spr = make_sprite(shapes_marker)
        wx, wy = _shake(n, rng, s, wob_amp)
        ang0 = rng.uniform(-np.pi, np.pi)
        return _Actor(spr, wx.copy(), wy.copy(), radius * ones, ang0 + _smooth_noise(n, rng, 0.03, 3.0))

    if label in (0, 2):
        a = single(s * rng.uniform(0.11, 0.19))
        along = (w if label == 0 else h) * rng.uniform(0.25, 0.6)
        drift = along * rng.uniform(-0.12, 0.12)
        d_main, d_side = along * p, drift * p + _smooth_noise(n, rng, s * 0.01, 4.0)
        if label == 0:  # left -> right
            a.x += d_main
            a.y += d_side
        else:  # up: y decreases
            a.y -= d_main
            a.x += d_side
        actors = [a]
    elif label == 4:  # towards the camera: grows (perspective: log-linear in progress)
        r0 = s * rng.uniform(0.07, 0.11)
        k = rng.uniform(1.8, 2.8)
        a = single(r0)
        a.radius = r0 * np.exp(np.log(k) * p)
        a.x += rng.uniform(-0.08, 0.08) * s * p
        a.y += rng.uniform(-0.08, 0.08) * s * p
        actors = [a]
    elif label == 6:  # clockwise: angle increases (y down)
        a = single(s * rng.uniform(0.11, 0.19), shapes_marker=True)
        a.angle = a.angle + np.radians(rng.uniform(70.0, 200.0)) * p
        a.x += rng.uniform(-0.05, 0.05) * s * p
        a.y += rng.uniform(-0.05, 0.05) * s * p
        actors = [a]
    elif label in (8, 10):
        ra, rb = s * rng.uniform(0.09, 0.15), s * rng.uniform(0.09, 0.15)
        a, b = single(ra), single(rb)
        phi = rng.uniform(-0.45, 0.45) if rng.random() < 0.65 else rng.uniform(-np.pi / 2, np.pi / 2)
        axis = np.array([math.cos(phi), math.sin(phi)])
        normal = np.array([-axis[1], axis[0]])
        # the length of the axis line through the frame bounds the separations
        extent = min(w / max(abs(axis[0]), 1e-3), h / max(abs(axis[1]), 1e-3))
        rsum = ra + rb
        # perpendicular offset of the two paths, same law in 8 and 10: the centres never come closer than
        # rsum / 2 in either class, so a frame from the middle of a pass looks like the end of "closer"
        offset = rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 0.9) * rsum
        far = max(extent * rng.uniform(0.45, 0.75), 2.5 * rsum)
        if label == 8:  # closer: far apart -> close (touching or partly overlapping, never coinciding)
            near_gap = rng.uniform(0.0, 0.9) * rsum
            sep = far + (near_gap - far) * p
        else:  # pass: far apart -> cross -> far apart on the other side
            far2 = max(extent * rng.uniform(0.45, 0.75), 2.5 * rsum)
            sep = far + (-far2 - far) * p
        share = rng.random() if rng.random() < 0.6 else float(rng.integers(2))  # part of motion by A
        travel = sep[0] - sep
        pos_a = share * travel
        pos_b = sep[0] - (1 - share) * travel
        # keep the whole motion inside the frame: shrink it along the axis if it would not fit
        span = max(pos_a.max() + ra, pos_b.max() + rb) - min(pos_a.min() - ra, pos_b.min() - rb)
        if span > 0.95 * extent:
            pos_a, pos_b = pos_a * (0.95 * extent / span), pos_b * (0.95 * extent / span)
        for actor, pos, side in ((a, pos_a, -0.5), (b, pos_b, 0.5)):
            actor.x += pos * axis[0] + side * offset * normal[0]
            actor.y += pos * axis[1] + side * offset * normal[1]
        actors = [a, b] if rng.random() < 0.5 else [b, a]  # drawing order: the last one is in front
    elif label == 11:  # holding: hand shake only
        a = single(s * rng.uniform(0.11, 0.19))
        jx, jy = _shake(n, rng, s, rng.uniform(0.006, 0.018))
        a.x += jx
        a.y += jy
        a.angle = a.angle + _smooth_noise(n, rng, np.radians(rng.uniform(1.0, 5.0)), 4.0)
        a.radius = a.radius * (1.0 + _smooth_noise(n, rng, 0.02, 5.0))
        actors = [a]
    else:
        raise ValueError(f"not a forward label: {label}")
    _fit(actors, w, h, rng)
    return actors


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    kind = rng.choice(6, p=[0.14, 0.2, 0.14, 0.24, 0.12, 0.16])
    c1 = _colour(rng)
    c2 = (
        np.clip(c1 + rng.uniform(-120, 120, 3), 0, 255).astype(np.float32)
        if rng.random() < 0.6
        else _colour(rng)
    )
    if kind == 0:  # solid
        bg = np.broadcast_to(c1, (h, w, 3)).astype(np.float32)
    elif kind == 1:  # linear gradient
        beta = rng.uniform(0, 2 * np.pi)
        xs, ys = np.linspace(-1, 1, w, dtype=np.float32), np.linspace(-1, 1, h, dtype=np.float32)
        t = (np.cos(beta) * xs[None, :] + np.sin(beta) * ys[:, None] + 1.5) / 3.0
        bg = c1 + t[..., None] * (c2 - c1)
    elif kind == 2:  # fine noise around a colour
        bg = c1 + rng.uniform(-1, 1, (h, w, 1)).astype(np.float32) * rng.uniform(10, 45)
    elif kind == 3:  # low-pass random texture, 2-3 colours
        g = int(rng.integers(3, 10))
        t = _upsample(rng.random((g, int(g * w / h) + 2, 1)), h, w)
        bg = c1 + t * (c2 - c1)
        if rng.random() < 0.5:
            bg = bg + _upsample(rng.uniform(-30, 30, (g + 3, g + 3, 3)), h, w)
    elif kind == 4:  # wallpaper: low contrast stripes / tiles
        bg = _texture(rng, w, h, c1, (c1 + (c2 - c1) * rng.uniform(0.15, 0.4)).astype(np.float32))
    else:  # table / wall split
        split = int(h * rng.uniform(0.3, 0.75))
        bg = np.empty((h, w, 3), np.float32)
        bg[:split] = c1
        bg[split:] = c2
        bg *= (1.0 + np.linspace(-0.15, 0.15, h, dtype=np.float32) * rng.choice([-1, 1]))[:, None, None]
    bg = np.ascontiguousarray(bg, dtype=np.float32)
    if rng.random() < 0.45:  # clutter: static shapes
        s = min(h, w)
        mean = bg.mean((0, 1))
        for _ in range(int(rng.integers(3, 11))):
            spr = _object_sprite(rng, mean)
            r = s * rng.uniform(0.03, 0.1)
            _paste(
                bg,
                spr,
                rng.uniform(0, w),
                rng.uniform(0, h),
                r,
                r * rng.uniform(0.5, 1.0),
                rng.uniform(-3, 3),
            )
    return bg


def _arm_sprite(rng: np.random.Generator) -> _Sprite:
    skin = np.array(
        colorsys.hsv_to_rgb(rng.uniform(0.02, 0.1), rng.uniform(0.25, 0.6), rng.uniform(0.35, 0.95))
    )
    colour = skin * 255.0 if rng.random() < 0.6 else _colour(rng)  # bare arm or a sleeve
    n = 16
    _, v = _grid(n)
    rgb = np.broadcast_to(np.asarray(colour, np.float32), (n, n, 3)) * (1.0 - 0.25 * np.abs(v))[..., None]
    return _make_sprite(rgb.astype(np.float32), np.ones((n, n), np.float32), "arm")


def _draw_actor(canvas: np.ndarray, a: _Actor, f: int, dx: float, dy: float) -> None:
    cx, cy, r = a.x[f] - dx, a.y[f] - dy, a.radius[f]
    if a.arm is not None:
        spr, direction, width = a.arm
        c, s = math.cos(direction), math.sin(direction)
        hgt, wid = canvas.shape[:2]
        # distance from the object to the frame border along the arm
        lx = ((wid - cx) / c if c > 1e-6 else (-cx / c if c < -1e-6 else 1e9)) + r
        ly = ((hgt - cy) / s if s > 1e-6 else (-cy / s if s < -1e-6 else 1e9)) + r
        length = max(min(lx, ly), r) + 2.0
        _paste(canvas, spr, cx + c * length / 2, cy + s * length / 2, length / 2, width * r, direction)
    _paste(canvas, a.sprite, cx, cy, r, r * a.aspect, a.angle[f])


def _render(
    label: int,
    rng: np.random.Generator,
    short_side: int,
    plain: bool,
    select: Callable[[int], np.ndarray] | None,
) -> SyntheticClip:
    if not 0 <= label < NUM_CLASSES:
        raise ValueError(f"label must be in [0, {NUM_CLASSES}), got {label}")
    forward = _REVERSED.get(label, label)
    fps = float(rng.choice(_FPS_CHOICES))
    duration = rng.uniform(1.5, 4.0)
    n = max(2, round(duration * fps))
    aspect = float(rng.choice(_ASPECTS))
    if aspect >= 1.0:
        h, w = short_side, max(2, round(short_side * aspect / 2) * 2)
    else:
        w, h = short_side, max(2, round(short_side / aspect / 2) * 2)
    s = float(short_side)

    pad = 0 if plain or rng.random() < 0.3 else max(1, round(rng.uniform(1.0, 4.0) * s / 128))
    if plain:
        bg = np.empty((h, w, 3), np.float32)
        bg[:] = _PLAIN_BG
    else:
        bg = _background(rng, h + 2 * pad, w + 2 * pad)
    bg_mean = bg.mean((0, 1))

    count = [0]

    def make_sprite(turning: bool) -> _Sprite:
        if plain:
            colour = PLAIN_COLOURS[count[0] % 2]
            count[0] += 1
            return _solid_sprite(colour, "arrow", rng)
        shapes = SHAPES
        spr = _object_sprite(rng, bg_mean, shapes=shapes, marker=False)
        if turning and spr.name in _SYMMETRIC:
            spr = _object_sprite(rng, bg_mean, shapes=shapes, marker=True)
        return spr

    # The main action stays inside the centred square that the paper's centre crop keeps, as real datasets
    # frame the action (and as centre-crop testing presumes): on a 16:9 frame, action anywhere put a third
    # of the two-object clips partly outside the crop, where no model can see it. Clutter, distractors and
    # occluders still use the whole frame.
    inner = ACTION_SQUARE * s
    main = _main_actors(forward, n, inner, inner, rng, make_sprite, size=s)
    for a in main:
        a.x += (w - inner) / 2
        a.y += (h - inner) / 2
    behind: list[_Actor] = []
    front: list[_Actor] = []
    occluder = None
    if not plain:
        for a in main:
            if rng.random() < 0.35:
                a.arm = (_arm_sprite(rng), rng.uniform(-np.pi, np.pi), rng.uniform(0.3, 0.5))
        for _ in range(int(rng.choice(4, p=[0.35, 0.3, 0.2, 0.15]))):
            r = float(main[0].radius.mean()) * rng.uniform(0.3, 0.6)
            spr = _object_sprite(rng, bg_mean)
            if rng.random() < 0.4:
                x, y = np.zeros(n), np.zeros(n)
            else:
                x, y = _shake(n, rng, s, rng.uniform(0.01, 0.05))
            x += rng.uniform(0, w)
            y += rng.uniform(0, h)
            ang = rng.uniform(-np.pi, np.pi) + _smooth_noise(n, rng, rng.uniform(0.0, 0.3), 5.0)
            d = _Actor(spr, x, y, np.full(n, r), ang, aspect=rng.uniform(0.6, 1.0))
            (front if rng.random() < 0.4 else behind).append(d)
        if rng.random() < 0.25:  # a static foreground occluder somewhere on the main path
            a = main[int(rng.integers(len(main)))]
            f = int(rng.integers(n))
            r = float(a.radius[f]) * rng.uniform(0.35, 0.7)
            ox, oy = a.x[f] + rng.uniform(-1, 1) * a.radius[f], a.y[f] + rng.uniform(-1, 1) * a.radius[f]
            occluder = _Actor(
                _object_sprite(rng, bg_mean),
                np.full(n, ox),
                np.full(n, oy),
                np.full(n, r),
                np.full(n, rng.uniform(-np.pi, np.pi)),
                aspect=rng.uniform(0.4, 1.0),
            )
            front.append(occluder)

    if pad:
        jx, jy = _shake(n, rng, 1.0, pad * rng.uniform(0.3, 0.6))
        jx = np.clip(np.rint(jx), -pad, pad).astype(int) + pad
        jy = np.clip(np.rint(jy), -pad, pad).astype(int) + pad
    else:
        jx = jy = np.zeros(n, int)

    sigma, bank, offs, blur = 0.0, None, None, False
    gain = np.ones((n, 3), np.float32)
    if not plain:
        level = rng.uniform(0.7, 1.2) * (1.0 + _smooth_noise(n, rng, rng.uniform(0.0, 0.08), 6.0))
        gain = (level[:, None] * (1.0 + rng.uniform(-0.08, 0.08, 3))[None, :]).astype(np.float32)
        sigma = rng.uniform(0.0, 9.0) if rng.random() < 0.7 else 0.0
        if sigma > 0.5:  # sensor noise: random crops of one noise field
            bank = rng.normal(0.0, sigma, (h + 8, w + 8, 3)).astype(np.float32)
            offs = rng.integers(0, 9, (n, 2))
        blur = rng.random() < 0.3

    # frame by frame, so the float canvas stays in cache; reversed classes are written back to front.
    # Nothing below draws from ``rng``, so rendering a selection gives the same pixels as the whole clip.
    reverse = label != forward
    wanted = np.arange(n) if select is None else np.asarray(select(n), dtype=np.int64).reshape(-1)
    if wanted.size and (wanted.min() < 0 or wanted.max() >= n):
        raise ValueError(f"selected frame indices must be in [0, {n}), got {wanted.tolist()}")
    out = np.empty((len(wanted), h, w, 3), np.uint8)
    canvas = np.empty((h, w, 3), np.float32)
    tmp = np.empty_like(canvas)
    for slot, index in enumerate(wanted.tolist()):
        if slot and index == wanted[slot - 1]:  # repeated index (short clips): copy, don't redraw
            out[slot] = out[slot - 1]
            continue
        f = n - 1 - index if reverse else index
        canvas[:] = bg[jy[f] : jy[f] + h, jx[f] : jx[f] + w]
        dx, dy = float(jx[f] - pad), float(jy[f] - pad)
        for a in behind:
            _draw_actor(canvas, a, f, dx, dy)
        for a in main:
            _draw_actor(canvas, a, f, dx, dy)
        for a in front:
            _draw_actor(canvas, a, f, dx, dy)
        if not plain:
            canvas *= gain[f]
            if bank is not None:
                canvas += bank[offs[f, 0] : offs[f, 0] + h, offs[f, 1] : offs[f, 1] + w]
            if blur:  # 2x2 box (edges replicated)
                np.add(canvas[:, 1:], canvas[:, :-1], out=tmp[:, 1:])
                np.multiply(canvas[:, 0], 2.0, out=tmp[:, 0])
                np.add(tmp[1:], tmp[:-1], out=canvas[1:])
                np.multiply(tmp[0], 2.0, out=canvas[0])
                canvas *= np.float32(0.25)
            np.minimum(np.maximum(canvas, 0.0, out=canvas), 255.0, out=canvas)
        np.copyto(out[slot], canvas, casting="unsafe")
    return SyntheticClip(frames=out, label=label, fps=fps, length=n)


# --------------------------------------------------------------------------------------------- public API
def render_clip(
    label: int,
    rng: np.random.Generator,
    *,
    short_side: int = 128,
    plain: bool = False,
    select: Callable[[int], np.ndarray] | None = None,
) -> SyntheticClip:
    """Render one clip of class ``label`` from the random stream ``rng``.

    The short side of the frames is ``short_side`` pixels, the long one follows a random aspect ratio (even).
    ``plain=True`` is a debug render for measuring motion: uniform grey background, the main object(s) as
    solid arrows of the fixed colours ``PLAIN_COLOURS`` (object A red, object B blue), and no camera shake,
    clutter, distractors, arm, occluder, brightness drift, noise or blur. Motions are sampled as usual.

    ``select(length) -> indices`` renders only those frames of the ``length``-frame clip, in that order
    (repeats allowed): the same pixels as ``render_clip(...).frames[indices]``, at a fraction of the cost
    (drawing is per frame, and training samples 8 of the ~50 frames of a clip).
    """
    return _render(int(label), rng, int(short_side), plain, select)


def _clip_rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, index] if stream == 0 else [seed, index, stream])


def _generate(num_clips: int, seed: int, short_side: int, labels: Sequence[int] | None, stream: int):
    cycle = list(range(NUM_CLASSES)) if labels is None else [int(x) for x in labels]
    if not cycle:
        raise ValueError("labels must not be empty")
    for i in range(num_clips):
        yield render_clip(cycle[i % len(cycle)], _clip_rng(seed, i, stream), short_side=short_side)


def generate(
    num_clips: int, seed: int, *, short_side: int = 128, labels: Sequence[int] | None = None
) -> Iterator[SyntheticClip]:
    """Clips 0..num_clips-1, cycling through ``labels`` (default: all 12 classes in order).

    Clip ``i`` is rendered from ``np.random.default_rng([seed, i])`` with label ``labels[i % len(labels)]``,
    so the stream is deterministic, any clip can be reproduced alone, and workers can split the indices.
    """
    return _generate(num_clips, seed, short_side, labels, 0)


def _encode_webm(path: Path, frames: np.ndarray, fps: float, codec: str) -> None:
    import av  # optional dependency: only needed to write videos

    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w", format="webm") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        if codec.startswith("libvpx"):
            stream.options = {"deadline": "realtime", "cpu-used": "8", "crf": "30", "b:v": "0"}
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_something_something_v2(
    out_dir: Path,
    num_train: int,
    num_val: int,
    seed: int,
    *,
    short_side: int = 128,
    codec: str = "libvpx-vp9",
) -> Path:
    """Write a synthetic dataset laid out like the Something-Something-V2 distribution; return ``out_dir``.

    Format followed (the SSv2 release, 20bn / Qualcomm):

    - ``labels.json``: a JSON object mapping each class name (the template without brackets, e.g.
      ``"Holding something"``) to its class index as a *string* (``"11"``).
    - ``train.json`` / ``validation.json``: JSON lists of ``{"id": "<int as str>", "label": ...,
      "template": "Holding [something]", "placeholders": [...]}``. In real SSv2 ``label`` is the template
      filled in with the object names (lower case, e.g. "holding potato"); here ``label`` is the template
      without brackets (the class name) and ``placeholders`` holds one ``"object"`` per
      ``[something]``. Loaders must map ``template`` (brackets removed) through
      ``labels.json``, as the reference SSv2 preprocessing scripts do.
    - ``videos/<id>.webm``: VP9 in WebM, yuv420p, at the clip's own frame rate and size. Ids are unique
      across the two splits: train ids are 1..num_train, validation ids follow.

    Train clip ``i`` is ``generate(num_train, seed)``'s clip ``i``; validation clips come from the
    independent streams ``default_rng([seed, i, 1])``. Both splits cycle through the 12 classes.
    """
    out_dir = Path(out_dir)
    videos = out_dir / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    labels = {name: str(i) for i, name in enumerate(SYNTHETIC_LABELS)}
    (out_dir / "labels.json").write_text(json.dumps(labels, indent=1))
    next_id = 1
    for split, count, stream in (("train", num_train, 0), ("validation", num_val, 1)):
        entries = []
        for clip in _generate(count, seed, short_side, None, stream):
            vid = str(next_id)
            next_id += 1
            _encode_webm(videos / f"{vid}.webm", clip.frames, clip.fps, codec)
            n_objects = SYNTHETIC_TEMPLATES[clip.label].count("[something]")
            entries.append(
                {
                    "id": vid,
                    "label": SYNTHETIC_LABELS[clip.label],
                    "template": SYNTHETIC_TEMPLATES[clip.label],
                    "placeholders": ["object"] * n_objects,
                }
            )
        (out_dir / f"{split}.json").write_text(json.dumps(entries, indent=1))
    return out_dir


def write_preview(path: Path, seed: int = 0, *, per_class: int = 6, short_side: int = 128) -> Path:
    """A contact sheet: one row per class, ``per_class`` evenly spaced frames of one clip each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(NUM_CLASSES, per_class, figsize=(per_class * 2.0, NUM_CLASSES * 1.35))
    for label, clip in enumerate(generate(NUM_CLASSES, seed, short_side=short_side)):
        idx = np.linspace(0, len(clip.frames) - 1, per_class).round().astype(int)
        for j, f in enumerate(idx):
            ax = axes[label, j]
            ax.imshow(clip.frames[f])
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(f"{label}", rotation=0, labelpad=10, fontsize=9)
            ax.set_title(
                f"t={f / clip.fps:.2f}s" + (f"  {SYNTHETIC_LABELS[label]}" if j == 0 else ""),
                fontsize=6,
                loc="left",
            )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, help="write an SSv2-format dataset here")
    ap.add_argument("--train", type=int, default=1000)
    ap.add_argument("--val", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--short-side", type=int, default=128)
    ap.add_argument("--codec", default="libvpx-vp9")
    ap.add_argument("--preview", type=Path, help="write a contact sheet PNG (one row per class)")
    args = ap.parse_args(argv)
    if args.out is None and args.preview is None:
        ap.error("give --out and/or --preview")
    if args.preview is not None:
        write_preview(args.preview, args.seed, short_side=args.short_side)
        print(f"preview -> {args.preview}")
    if args.out is not None:
        t0 = time.perf_counter()
        write_something_something_v2(
            args.out, args.train, args.val, args.seed, short_side=args.short_side, codec=args.codec
        )
        print(
            f"{args.train} train + {args.val} validation clips -> {args.out}",
            f"({time.perf_counter() - t0:.1f}s)",
        )


if __name__ == "__main__":
    main()


# ------------------------------------------------------------------------------------ untrimmed sequences
@dataclass
class SyntheticSequence:
    """An untrimmed video: rendered clips of several classes back to back, with known cut times."""

    frames: np.ndarray  # (F, S, S, 3) uint8, square
    fps: float
    labels: list[int]  # the class of each action, in order
    cuts_s: list[float]  # start time of each action after the first (len(labels) - 1 boundaries)

    @property
    def duration_s(self) -> float:
        return len(self.frames) / self.fps

    def spans(self) -> list[tuple[int, float, float]]:
        """(label, start_s, end_s) of each action."""
        edges = [0.0, *self.cuts_s, self.duration_s]
        return [(label, edges[i], edges[i + 1]) for i, label in enumerate(self.labels)]


def render_sequence(
    labels: Sequence[int],
    rng: np.random.Generator,
    *,
    short_side: int = 96,
    fps: float = 15.0,
    min_action_s: float = 0.0,
    min_clip_s: float = 0.0,
) -> SyntheticSequence:
    """Clips of ``labels`` (one :func:`render_clip` each, 1.5-4 s as in training), centre-cropped to
    ``short_side`` squares and retimed to a common ``fps`` (frame ``j`` of the sequence shows the
    clip's frame at the same time: motions keep their real speed), concatenated. An action shorter than
    ``min_action_s`` is the same class performed again (further clips of that class, fresh draws of
    ``rng``) until it lasts at least that long; a clip shorter than ``min_clip_s`` (< 4) is rendered
    again (a fresh draw) instead of being used."""
    parts: list[np.ndarray] = []
    cuts: list[float] = []
    total = 0
    for label in labels:
        if total:
            cuts.append(total / fps)
        action = 0
        while action == 0 or action < min_action_s * fps:
            clip = render_clip(int(label), rng, short_side=short_side)
            while clip.length / clip.fps < min_clip_s:
                clip = render_clip(int(label), rng, short_side=short_side)
            count = max(1, int(clip.length / clip.fps * fps))
            picks = [min(clip.length - 1, int(j * clip.fps / fps)) for j in range(count)]
            h, w = clip.frames.shape[1:3]
            y, x = (h - short_side) // 2, (w - short_side) // 2
            parts.append(clip.frames[picks, y : y + short_side, x : x + short_side])
            action += count
        total += action
    return SyntheticSequence(np.concatenate(parts), float(fps), [int(x) for x in labels], cuts)
