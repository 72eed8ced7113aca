"""Trees: species, height, irregular star-shaped crown outlines, placement, and the visible (true) crowns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry import Point, Polygon, box

from crownsam.common.vector import largest_polygon
from crownsam.synthetic.grid import Grid
from crownsam.synthetic.layout import Layout

N_ANGLES = 180
ANGLES = np.linspace(0.0, 2 * np.pi, N_ANGLES, endpoint=False)
SPECIES = ("spruce", "pine", "birch")
SPECIES_P = (0.3, 0.28, 0.42)
CONIFERS = frozenset({"spruce", "pine"})
# height range (m) and crown radius r0 = a + b * height (m), per species
HEIGHT_RANGE = {"spruce": (12.0, 25.0), "pine": (12.0, 24.0), "birch": (8.0, 21.0)}
RADIUS_FIT = {"spruce": (0.45, 0.075), "pine": (0.75, 0.085), "birch": (1.1, 0.105)}
DENSITY = 0.1  # trees per m^2 aimed at on free ground (before spacing rejections)
SPACING = 0.62  # centres at least SPACING * (r0_i + r0_j) apart
MIN_VISIBLE_FRACTION = 0.2
MIN_VISIBLE_M2 = 0.5


@dataclass(frozen=True, eq=False)
class Tree:
    """One tree: crown centre (x, y), height, species and crown radius ``radii[k]`` at ``ANGLES[k]``."""

    x: float
    y: float
    height: float
    species: str
    radii: np.ndarray
    branches: int  # number of main branches seen from above (conifer spokes)
    phase: float

    @property
    def conifer(self) -> bool:
        """Whether the species is a conifer."""
        return self.species in CONIFERS

    @property
    def rmax(self) -> float:
        """Largest crown radius."""
        return float(self.radii.max())

    @property
    def polygon(self) -> Polygon:
        """The full crown outline (before occlusion)."""
        return Polygon(
            np.column_stack([self.x + self.radii * np.cos(ANGLES), self.y + self.radii * np.sin(ANGLES)])
        )

    def rho(self, dx: np.ndarray, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalised radial distance ``d / r(theta)`` and angle ``theta`` of offsets from the centre."""
        theta = np.arctan2(dy, dx)
        r = np.interp(theta, ANGLES, self.radii, period=2 * np.pi)
        return np.hypot(dx, dy) / r, theta


def crown_radii(rng: np.random.Generator, species: str, r0: float, branches: int, phase: float) -> np.ndarray:
    """Star-shaped outline: ``r0 * (1 + sum_k a_k cos(k theta + phi_k)) * spikes``.

    Smooth lobes (k = 2..6) for all species; conifers add ``branches`` pointed tips,
    ``1 + s * (|cos(branches * theta / 2 + phase)|^4 - 3/8)``, which look like branch ends seen from above.
    """
    k = np.arange(2, 7)
    lobe = 0.05 if species in CONIFERS else 0.075
    a = rng.normal(0.0, lobe, k.size) / k**0.5
    phi = rng.uniform(0.0, 2 * np.pi, k.size)
    r = 1.0 + (a[:, None] * np.cos(k[:, None] * ANGLES + phi[:, None])).sum(0)
    if species in CONIFERS:
        s = 0.22 if species == "spruce" else 0.14
        r *= 1.0 + s * (np.abs(np.cos(branches * ANGLES / 2 + phase)) ** 4 - 0.375)
    return r0 * np.clip(r, 0.6, 1.45)


def draw_tree(rng: np.random.Generator, x: float, y: float) -> Tree:
    """A random tree at (x, y)."""
    species = SPECIES[rng.choice(len(SPECIES), p=SPECIES_P)]
    height = rng.uniform(*HEIGHT_RANGE[species])
    a, b = RADIUS_FIT[species]
    r0 = float(np.clip(a + b * height + rng.normal(0.0, 0.2), 1.25, 3.3))
    branches = int(rng.integers(9, 15)) if species in CONIFERS else int(rng.integers(5, 9))
    phase = float(rng.uniform(0.0, 2 * np.pi))
    radii = crown_radii(rng, species, r0, branches, phase)
    return Tree(float(x), float(y), round(float(height), 2), species, radii, branches, phase)


def place_trees(rng: np.random.Generator, grid: Grid, layout: Layout) -> list[Tree]:
    """Dart throwing: random trees accepted when clear of the road/roofs and not too close to others.

    A smooth random density field ``p in [0.3, 1]`` thins the stand in places (gaps and clumps).
    Attempts stop at ``DENSITY * free area`` trees or ``40x`` as many tries.
    """
    xmin, ymin, xmax, ymax = grid.bounds
    e = grid.extent
    exclusion = layout.exclusion
    shapely.prepare(exclusion)
    free = box(*grid.bounds).difference(exclusion).area
    target = max(1, round(DENSITY * free))
    kx = np.arange(1, 4)
    amp, ph = rng.normal(0.0, 1.0, (2, kx.size)), rng.uniform(0, 2 * np.pi, (2, kx.size))

    def density(x: float, y: float) -> float:
        u, v = (x - xmin) / e, (ymax - y) / e
        s = (amp[0] * np.sin(2 * np.pi * kx * u + ph[0])).sum() + (
            amp[1] * np.sin(2 * np.pi * kx * v + ph[1])
        ).sum()
        return 0.3 + 0.7 / (1.0 + np.exp(-1.5 * s))

    trees: list[Tree] = []
    xs, ys, rs = np.empty(target), np.empty(target), np.empty(target)
    for _ in range(40 * target + 200):
        if len(trees) == target:
            break
        x, y = rng.uniform(xmin, xmax), rng.uniform(ymin, ymax)
        if rng.uniform() > density(x, y):
            continue
        t = draw_tree(rng, x, y)
        n = len(trees)
        r0 = float(np.median(t.radii))
        if n and np.any(np.hypot(xs[:n] - x, ys[:n] - y) < SPACING * (rs[:n] + r0)):
            continue
        if exclusion.distance(Point(x, y)) < t.rmax:
            continue
        xs[n], ys[n], rs[n] = x, y, r0
        trees.append(t)
    return trees


def visible_crowns(trees: list[Tree], valid: Polygon) -> list[Polygon | None]:
    """Visible part of each crown: its outline minus every taller crown, inside ``valid``; largest piece.

    Ties in height are broken by list order (later is on top), matching the rendering order.
    """
    polys = [t.polygon for t in trees]
    rank = np.lexsort((np.arange(len(trees)), np.array([t.height for t in trees])))
    level = np.empty(len(trees), dtype=np.int64)
    level[rank] = np.arange(len(trees))
    index = shapely.STRtree(polys)
    out: list[Polygon | None] = []
    for i, p in enumerate(polys):
        over = [j for j in index.query(p, predicate="intersects") if level[j] > level[i]]
        vis = p.difference(shapely.union_all([polys[j] for j in over])) if over else p
        part = largest_polygon(vis.intersection(valid))
        out.append(part if part else None)
    return out


def true_crowns(trees: list[Tree], valid: Polygon) -> tuple[list[Tree], list[Polygon]]:
    """Drop trees whose visible crown is tiny (< 20 % of the crown or < 0.5 m^2) until none is.

    Removing a tree only uncovers trees below it, so the loop ends; the remaining trees' visible crowns
    do not overlap each other.
    """
    while True:
        vis = visible_crowns(trees, valid)
        keep = [
            v is not None
            and v.area >= MIN_VISIBLE_M2
            and v.area >= MIN_VISIBLE_FRACTION * t.polygon.intersection(box(*valid.bounds)).area
            for t, v in zip(trees, vis, strict=True)
        ]
        if all(keep):
            return trees, [v for v in vis if v is not None]
        trees = [t for t, k in zip(trees, keep, strict=True) if k]
