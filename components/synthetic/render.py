"""Rasters of the scene: canopy height model, cast shadows and the 6-band orthophoto."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rasterio import features
from scipy import ndimage
from shapely.geometry import Polygon

from crownsam.synthetic.crowns import Tree
from crownsam.synthetic.grid import CHM_FACTOR, CHM_GSD, GSD, Grid, centres, pixel_window
from crownsam.synthetic.layout import Layout, Roof
from crownsam.synthetic.noise import smooth_noise, upsample

SUN_AZIMUTH = np.deg2rad(215.0)  # clockwise from north: the sun is in the south-west
SUN_ELEVATION = np.deg2rad(42.0)
SUN = np.array(
    [
        np.sin(SUN_AZIMUTH) * np.cos(SUN_ELEVATION),  # east
        np.cos(SUN_AZIMUTH) * np.cos(SUN_ELEVATION),  # north
        np.sin(SUN_ELEVATION),  # up
    ]
)
BANDS = ("blue", "green", "red", "nir", "red_edge", "thermal")
# Sunlit reflectance x 10^4 for blue, green, red, NIR, red edge. NIR: birch > pine > spruce (spruce the
# darkest crowns, birch the brightest). Pine's sparse, yellow-green crowns show more red than spruce's
# dense dark-green ones: NDVI spruce 0.83 > pine 0.80, green share G/(R+G+B) birch 0.49 > spruce 0.47 >
# pine 0.43 (what tells the two conifers apart in the bands; crownsam.classes relies on it).
TREE_SPECTRA = {
    "spruce": (230.0, 420.0, 250.0, 2700.0, 1250.0),
    "pine": (300.0, 480.0, 340.0, 3100.0, 1450.0),
    "birch": (360.0, 720.0, 380.0, 4600.0, 2100.0),
}
GRASS = np.array([450.0, 850.0, 720.0, 2300.0, 1450.0])  # NDVI ~ 0.52
SOIL = np.array([620.0, 830.0, 1000.0, 1650.0, 1350.0])  # litter and bare soil, NDVI ~ 0.21
ROAD = np.array([950.0, 1050.0, 1150.0, 1300.0, 1230.0])  # gravel/asphalt, NDVI ~ 0.06
ROOF = (
    np.array([850.0, 900.0, 950.0, 1100.0, 1000.0]),  # dark grey metal
    np.array([650.0, 850.0, 1900.0, 2500.0, 2250.0]),  # red tiles
)
# Surface temperature (K) = base + gain * sunlit fraction; the band stores 0.1 K units. Broadleaf crowns
# transpire more and reflect more than needle crowns, so birch is the coolest canopy.
TREE_T = {"spruce": (294.0, 2.0), "pine": (294.5, 2.0), "birch": (293.5, 1.5)}
GRASS_T, SOIL_T, ROAD_T, ROOF_T = (292.5, 9.0), (294.0, 14.0), (300.0, 16.0), (302.0, 18.0)
SHADOW_DEPTH_CROWN = 0.5  # brightness lost in full shadow on crowns (they are lit by skylight from above)
SHADOW_DEPTH_GROUND = 0.68


def crown_surface(tree: Tree, rho: np.ndarray) -> np.ndarray:
    """Canopy height at normalised radius ``rho < 1``.

    Broadleaf: ellipsoid ``H * (0.45 + 0.55 * sqrt(1 - rho^2))``; conifer: pointed
    ``H * (0.3 + 0.7 * (1 - rho^1.5))``. Both equal H at the centre.
    """
    if tree.conifer:
        return tree.height * (0.3 + 0.7 * (1.0 - rho**1.5))
    return tree.height * (0.45 + 0.55 * np.sqrt(np.clip(1.0 - rho**2, 0.0, None)))


def render_chm(grid: Grid, trees: Sequence[Tree], layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free CHM (max of crown surfaces and roofs, 0 elsewhere) and its owner raster.

    Owner: tree index + 1, ``-(roof index + 1)``, or 0 for ground.
    """
    n = grid.chm_size
    chm = np.zeros((n, n), dtype=np.float32)
    owner = np.zeros((n, n), dtype=np.int32)
    xc = centres(grid.x0, CHM_GSD, 0, n)
    yc = centres(grid.y0, CHM_GSD, 0, n, sign=-1.0)
    for k, t in enumerate(trees, start=1):
        r0, r1, c0, c1 = pixel_window(t.x, t.y, t.rmax, grid.x0, grid.y0, CHM_GSD, n)
        if r0 >= r1 or c0 >= c1:
            continue
        rho, _ = t.rho(xc[None, c0:c1] - t.x, yc[r0:r1, None] - t.y)
        z = crown_surface(t, np.minimum(rho, 1.0)).astype(np.float32)
        sub, own = chm[r0:r1, c0:c1], owner[r0:r1, c0:c1]
        upd = (rho < 1.0) & (z > sub)
        sub[upd] = z[upd]
        own[upd] = k
    for i, roof in enumerate(layout.roofs, start=1):
        mask = features.rasterize([(roof.polygon, 1)], out_shape=(n, n), transform=grid.chm_transform) > 0
        rr, cc = np.nonzero(mask)
        _, v = roof.frame(xc[cc], yc[rr])
        z = roof.height(v).astype(np.float32)
        upd = z > chm[rr, cc]
        chm[rr[upd], cc[upd]] = z[upd]
        owner[rr[upd], cc[upd]] = -i
    return chm, owner


def _shift(a: np.ndarray, dr: int, dc: int, fill: float) -> np.ndarray:
    """``out[r, c] = a[r + dr, c + dc]``, ``fill`` where that falls outside."""
    h, w = a.shape
    out = np.full_like(a, fill)
    if abs(dr) >= h or abs(dc) >= w:
        return out
    out[max(0, -dr) : h - max(0, dr), max(0, -dc) : w - max(0, dc)] = a[
        max(0, dr) : h - max(0, -dr), max(0, dc) : w - max(0, -dc)
    ]
    return out


def cast_shadows(chm: np.ndarray, owner: np.ndarray, res: float = CHM_GSD, tol: float = 0.3) -> np.ndarray:
    """Boolean shadow mask: a cell is shaded if, marching towards the sun, another object rises above the ray.

    Cell p is shaded when ``z(p + d*s) - d * tan(elevation) > z(p) + tol`` for some distance d along the
    horizontal sun direction s and the object at ``p + d*s`` is not p's own (self-shading is left to the
    Lambertian term of the crown rendering).
    """
    dc, dr = np.sin(SUN_AZIMUTH), -np.cos(SUN_AZIMUTH)  # east is +col, north is -row
    tan_el = np.tan(SUN_ELEVATION)
    steps = int(np.ceil(float(chm.max()) / tan_el / res)) + 1
    shadow = np.zeros(chm.shape, dtype=bool)
    seen = set()
    for k in range(1, steps + 1):
        off = (round(k * dr), round(k * dc))
        if off in seen:
            continue
        seen.add(off)
        dist = float(np.hypot(*off)) * res
        ray = _shift(chm, *off, fill=0.0) - dist * tan_el
        shadow |= (ray > chm + tol) & (_shift(owner, *off, fill=0) != owner)
    return shadow


def _crown_brightness(
    t: Tree, dx: np.ndarray, dy: np.ndarray, fine: np.ndarray, mid: np.ndarray, clump: np.ndarray
) -> np.ndarray:
    """Relative brightness of crown pixels at offsets (dx, dy) m from the centre.

    ``light = 0.28 + 0.9 * max(n . sun, 0)`` with n the normal of the crown surface (steep cone for
    conifers, flattened hemisphere for broadleaf), times a texture: conifers show radial branches
    (``cos(branches * theta)`` spokes, slightly wavy) with dark gaps between them, whorl rings every ~0.45 m
    and needle grain; broadleaf crowns show leaf clumps with small dark holes. Thin crown edges are darker.
    """
    rho, theta = t.rho(dx, dy)
    rho = np.clip(rho, 0.0, 0.995)
    slope = 2.2 * np.sqrt(rho) if t.conifer else np.minimum(0.9 * rho / np.sqrt(1.0 - rho**2), 6.0)
    ct, st = np.cos(theta), np.sin(theta)
    lam = (slope * ct * SUN[0] + slope * st * SUN[1] + SUN[2]) / np.sqrt(1.0 + slope**2)
    light = 0.28 + 0.9 * np.maximum(lam, 0.0)
    if t.conifer:
        wave = t.branches * theta + 2 * t.phase + 0.6 * (1 - rho) + 0.6 * clump + 0.25 * mid
        branch = np.floor((wave + np.pi) / (2 * np.pi))  # index of the nearest main branch
        spokes = (0.5 + 0.5 * np.cos(wave)) * (0.8 + 0.2 * np.cos(2.3 * branch + 3 * t.phase))
        twigs = 0.5 + 0.5 * np.cos(3 * wave + 2.0 * mid)
        whorls = 0.88 + 0.12 * np.cos(2 * np.pi * np.hypot(dx, dy) / 0.45 + 0.8 * clump)
        tex = (0.45 + 0.55 * spokes**1.2 + 0.2 * spokes * twigs) * whorls * (1.0 + 0.25 * fine)
        tex = np.where((spokes < 0.1 + 0.15 * rho) & (rho > 0.25), 0.5 * tex, tex)
        tex *= 1.0 + 0.3 * np.exp(-((rho / 0.1) ** 2))
    else:
        tex = (0.92 + 0.16 * clump + 0.1 * mid) * (1.0 + 0.14 * fine)
        tex = np.where(clump + 0.6 * mid < -2.1, 0.55 * tex, tex)
    edge = 1.0 - 0.25 * rho**6
    return (light * tex * edge).astype(np.float32)


def crown_ids(grid: Grid, trees: Sequence[Tree], truth: Sequence[Polygon]) -> np.ndarray:
    """Tree id (index + 1) shown at each orthophoto pixel, 0 for no crown.

    Truth polygons (visible crowns) are burnt first; pixels of a crown that is neither in the truth nor
    under a truth crown (small occluded fragments) take the topmost full crown there.
    """
    shape = (grid.size, grid.size)
    ids = range(1, len(trees) + 1)
    label = features.rasterize(
        zip(truth, ids, strict=True), out_shape=shape, transform=grid.transform, dtype="int32"
    )
    order = sorted(range(len(trees)), key=lambda i: (trees[i].height, i))
    top = features.rasterize(
        ((trees[i].polygon, i + 1) for i in order), out_shape=shape, transform=grid.transform, dtype="int32"
    )
    return np.where(label > 0, label, top)


@dataclass(frozen=True)
class Materials:
    """Per-pixel surface classes of the orthophoto."""

    cid: np.ndarray  # tree id shown (0: none)
    valid: np.ndarray  # inside the image-data area
    road: np.ndarray
    roof_id: np.ndarray  # roof index + 1 (0: none)
    soil: np.ndarray  # open ground: a grass/soil mixture
    grass: np.ndarray  # grass fraction of open ground, 0..1


def materials(rng: np.random.Generator, grid: Grid, cid: np.ndarray, layout: Layout) -> Materials:
    """Classify pixels: crowns (``cid``), road and roofs where no crown covers them, open ground."""
    shape, tr = (grid.size, grid.size), grid.transform
    ground = cid == 0
    valid = features.rasterize([(layout.valid, 1)], out_shape=shape, transform=tr, dtype="uint8") > 0
    road = features.rasterize([(layout.road, 1)], out_shape=shape, transform=tr, dtype="uint8") > 0
    roofs = [(r.polygon, i) for i, r in enumerate(layout.roofs, start=1)]
    roof_id = features.rasterize(roofs, out_shape=shape, transform=tr, dtype="uint8")
    road &= ground
    roof_id[~ground] = 0
    grass = np.clip(0.5 + 0.45 * smooth_noise(rng, shape, 60.0), 0.0, 1.0)
    return Materials(cid, valid, road, roof_id, ground & ~road & (roof_id == 0), grass)


def _roof_brightness(roof: Roof, x: np.ndarray, y: np.ndarray, fine: np.ndarray) -> np.ndarray:
    """Gable roof: two planes pitched 30 degrees, Lambertian, with seams every 0.4 m and a dark ridge."""
    u, v = roof.frame(x, y)
    pitch = np.deg2rad(30.0)
    ax, ay = -np.sin(roof.angle), np.cos(roof.angle)  # across-ridge unit vector
    side = np.where(v >= 0, 1.0, -1.0)
    lam = side * np.sin(pitch) * (ax * SUN[0] + ay * SUN[1]) + np.cos(pitch) * SUN[2]
    b = (0.35 + 0.85 * lam) * (1.0 + 0.06 * np.sin(2 * np.pi * u / 0.4) + 0.03 * fine)
    return np.where(np.abs(v) < 0.08, 0.7 * b, b)


def brightness(
    rng: np.random.Generator,
    grid: Grid,
    trees: Sequence[Tree],
    layout: Layout,
    m: Materials,
    fine: np.ndarray,
    shade: np.ndarray,
) -> np.ndarray:
    """Relative brightness of every pixel: texture and shading per material, darkened by cast shadows."""
    h = grid.size
    mid = smooth_noise(rng, (h, h), 3.0)
    clump = smooth_noise(rng, (h, h), 8.0)
    bright = (1.0 + 0.18 * fine + 0.10 * mid).astype(np.float32)  # grass and soil
    bright[m.road] = 1.0 + 0.05 * fine[m.road] + 0.05 * mid[m.road]
    xs = centres(grid.x0, GSD, 0, h)
    ys = centres(grid.y0, GSD, 0, h, sign=-1.0)
    for i, roof in enumerate(layout.roofs, start=1):
        rr, cc = np.nonzero(m.roof_id == i)
        bright[rr, cc] = _roof_brightness(roof, xs[cc], ys[rr], fine[rr, cc])
    for k, t in enumerate(trees, start=1):
        r0, r1, c0, c1 = pixel_window(t.x, t.y, t.rmax, grid.x0, grid.y0, GSD, h)
        rr, cc = np.nonzero(m.cid[r0:r1, c0:c1] == k)
        rr += r0
        cc += c0
        dx, dy = xs[cc] - t.x, ys[rr] - t.y
        bright[rr, cc] = _crown_brightness(t, dx, dy, fine[rr, cc], mid[rr, cc], clump[rr, cc])
    depth = np.where(m.cid == 0, SHADOW_DEPTH_GROUND, SHADOW_DEPTH_CROWN).astype(np.float32)
    bright *= 1.0 - depth * shade
    return bright


def tree_spectra(rng: np.random.Generator, trees: Sequence[Tree]) -> tuple[np.ndarray, np.ndarray]:
    """Per tree id (row 0 unused): reflectance (5 bands) and thermal (base K, sun gain K).

    Reflectance is the species spectrum times a random albedo (0.85-1.15) with +-4 % per band.
    """
    spectra = np.zeros((len(trees) + 1, 5), dtype=np.float32)
    temps = np.zeros((len(trees) + 1, 2), dtype=np.float32)
    for k, t in enumerate(trees, start=1):
        albedo = rng.uniform(0.85, 1.15) * (1.0 + rng.normal(0.0, 0.04, 5))
        spectra[k] = np.asarray(TREE_SPECTRA[t.species]) * albedo
        temps[k] = TREE_T[t.species]
    return spectra, temps


def reflectance_band(
    band: int, spectra: np.ndarray, layout: Layout, m: Materials, bright: np.ndarray, noise: np.ndarray
) -> np.ndarray:
    """One reflective band, uint16: ``spectrum * brightness * (1 + 0.02 noise)``, >= 1; 0 is nodata."""
    base = spectra[m.cid, band]
    g = m.grass[m.soil]
    base[m.soil] = g * GRASS[band] + (1.0 - g) * SOIL[band]
    base[m.road] = ROAD[band]
    for i, roof in enumerate(layout.roofs, start=1):
        base[m.roof_id == i] = ROOF[roof.material][band]
    base *= bright
    base *= 1.0 + 0.02 * noise
    return np.where(m.valid, np.clip(np.rint(base), 1, 65535), 0).astype(np.uint16)


def thermal_band(
    temps: np.ndarray, layout: Layout, m: Materials, shade: np.ndarray, fine: np.ndarray
) -> np.ndarray:
    """Thermal band, uint16 in 0.1 K: ``T = base + gain * sunlit``, blurred by sigma 4 px (coarse optics)."""
    t_base, t_gain = temps[m.cid, 0], temps[m.cid, 1]
    t_base[m.road], t_gain[m.road] = ROAD_T
    for i in range(1, len(layout.roofs) + 1):
        t_base[m.roof_id == i], t_gain[m.roof_id == i] = ROOF_T
    g = m.grass[m.soil]
    t_base[m.soil] = g * GRASS_T[0] + (1.0 - g) * SOIL_T[0]
    t_gain[m.soil] = g * GRASS_T[1] + (1.0 - g) * SOIL_T[1]
    temp = ndimage.gaussian_filter(t_base + t_gain * (1.0 - shade), 4.0) + 0.2 * fine
    return np.where(m.valid, np.clip(np.rint(10.0 * temp), 1, 65535), 0).astype(np.uint16)


def render_ortho(
    rng: np.random.Generator,
    grid: Grid,
    trees: Sequence[Tree],
    cid: np.ndarray,
    layout: Layout,
    shadow: np.ndarray,
) -> np.ndarray:
    """The 6-band uint16 orthophoto (blue, green, red, NIR, red edge, thermal), 0 outside ``layout.valid``.

    ``shadow`` is the boolean cast-shadow mask on the CHM grid; it is softened and upsampled here.
    """
    h = grid.size
    soft = ndimage.gaussian_filter(shadow.astype(np.float32), 0.7)
    shade = np.clip(upsample(soft, CHM_FACTOR, (h, h)), 0.0, 1.0)
    fine = smooth_noise(rng, (h, h), 0.7)
    m = materials(rng, grid, cid, layout)
    bright = brightness(rng, grid, trees, layout, m, fine, shade)
    spectra, temps = tree_spectra(rng, trees)
    out = np.empty((6, h, h), dtype=np.uint16)
    for b in range(5):
        out[b] = reflectance_band(
            b, spectra, layout, m, bright, rng.standard_normal((h, h), dtype=np.float32)
        )
    del bright
    out[5] = thermal_band(temps, layout, m, shade, fine)
    return out
