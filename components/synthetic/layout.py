"""Where things are: the image-data area (irregular right edge), a road and two roofs, in map coordinates."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from shapely import affinity
from shapely.geometry import LineString, Polygon, box

from crownsam.synthetic.grid import Grid

NODATA_FRACTION = 0.03  # mean width of the nodata strip along the right edge, as a fraction of the scene


@dataclass(frozen=True)
class Roof:
    """A gable roof: rectangle ``2 half_length x 2 half_width`` centred at (cx, cy), ridge along ``angle``."""

    cx: float
    cy: float
    half_length: float
    half_width: float
    angle: float  # ridge direction, radians anticlockwise from east
    eave_m: float
    ridge_m: float
    material: int  # index into the roof spectra

    @property
    def polygon(self) -> Polygon:
        """The roof outline."""
        rect = box(-self.half_length, -self.half_width, self.half_length, self.half_width)
        rect = affinity.rotate(rect, self.angle, origin=(0.0, 0.0), use_radians=True)
        return affinity.translate(rect, self.cx, self.cy)

    def frame(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Coordinates along the ridge (u) and across it (v) of map points (x, y)."""
        dx, dy = x - self.cx, y - self.cy
        ca, sa = np.cos(self.angle), np.sin(self.angle)
        return dx * ca + dy * sa, -dx * sa + dy * ca

    def height(self, v: np.ndarray) -> np.ndarray:
        """Roof surface height above ground at across-ridge coordinate ``v``."""
        t = np.clip(1.0 - np.abs(v) / self.half_width, 0.0, 1.0)
        return self.eave_m + (self.ridge_m - self.eave_m) * t


@dataclass(frozen=True)
class Layout:
    """The scene's fixed features; trees grow anywhere inside ``valid`` except on ``exclusion``."""

    valid: Polygon  # the area with image data (everything but the nodata strip)
    road: Polygon
    road_width: float
    roofs: tuple[Roof, ...]

    @property
    def exclusion(self) -> shapely.Geometry:
        """Road and roofs with a 0.3 m margin: no crown may touch it."""
        return shapely.union_all([self.road, *(r.polygon for r in self.roofs)]).buffer(0.3)


def valid_area(rng: np.random.Generator, grid: Grid) -> Polygon:
    """Scene square minus a strip of about ``NODATA_FRACTION`` along the right edge, with a wavy boundary.

    The boundary is ``x(y) = x0 + E * (1 - f + 0.006 * s(y))`` where ``s`` is a smooth random curve in
    [-1, 1], like the ragged edge of a real orthomosaic.
    """
    xmin, ymin, _, ymax = grid.bounds
    e = grid.extent
    n = 49
    ys = np.linspace(ymax, ymin, n)
    k = np.arange(1, 5)
    amp, phase = rng.normal(0.0, 1.0 / k), rng.uniform(0.0, 2 * np.pi, k.size)
    s = (amp[:, None] * np.sin(2 * np.pi * k[:, None] * np.linspace(0, 1, n) + phase[:, None])).sum(0)
    s = s / max(np.abs(s).max(), 1e-9)
    xs = xmin + e * (1.0 - NODATA_FRACTION + 0.006 * s)
    return Polygon([(xmin, ymax), *zip(xs, ys, strict=True), (xmin, ymin)])


def road(rng: np.random.Generator, grid: Grid) -> tuple[Polygon, float]:
    """A gently curving road across the scene at about 80 % of its height; width ``min(5, 0.05 E)`` m."""
    xmin, _, xmax, ymax = grid.bounds
    e = grid.extent
    width = min(5.0, 0.05 * e)
    xs = np.linspace(xmin - 1.0, xmax + 1.0, 65)
    phase = rng.uniform(0, 2 * np.pi)
    ys = ymax - e * (0.8 + 0.025 * np.sin(2 * np.pi * 0.8 * (xs - xmin) / e + phase))
    band = LineString(np.column_stack([xs, ys])).buffer(width / 2, cap_style="flat", quad_segs=4)
    return band.intersection(box(*grid.bounds)), width


def roofs(rng: np.random.Generator, grid: Grid) -> tuple[Roof, ...]:
    """Two houses: one below the road (dark metal roof), one above it (red tiles); sizes scale down with E."""
    xmin, _, _, ymax = grid.bounds
    e = grid.extent
    specs = [  # (u, v, half_length cap, half_width cap, material)
        (0.17, 0.925, min(5.0, 0.08 * e), min(3.5, 0.04 * e), 0),
        (0.62, 0.655, min(4.25, 0.07 * e), min(3.25, 0.0375 * e), 1),
    ]
    out = []
    for u, v, hl, hw, material in specs:
        eave = rng.uniform(4.5, 5.5)
        out.append(
            Roof(
                cx=xmin + u * e,
                cy=ymax - v * e,
                half_length=hl,
                half_width=hw,
                angle=float(np.deg2rad(rng.uniform(-12.0, 12.0))),
                eave_m=eave,
                ridge_m=eave + rng.uniform(2.0, 3.0),
                material=material,
            )
        )
    return tuple(out)


def build_layout(rng: np.random.Generator, grid: Grid) -> Layout:
    """Draw the valid area, road and roofs for ``grid``."""
    valid = valid_area(rng, grid)
    band, width = road(rng, grid)
    return Layout(valid=valid, road=band, road_width=width, roofs=roofs(rng, grid))
