"""Per-crown features from windowed reads of the orthophoto.

Crowns are grouped by the pseudolabeling window grid (1024 px windows, stride 512; each crown belongs to
the window whose central square holds its centroid, ``crownsam.tiling.plan.assign_windows``). For each
window one read covers the bounding boxes of its crowns (and, for SAM2, the window itself); the raster is
never read whole. A crown's pixels are the pixels whose centre lies inside its polygon and that are valid
in the raster's mask (nodata excluded).

Spectral features of one crown (:func:`crown_spectral`), in this order:

* per reflective band, in wavelength order (blue, green, red, red edge, NIR): the mean and the chosen
  percentiles of the crown's pixel values (``<band>_mean``, ``<band>_p10``, ...);
* each vegetation index (``crownsam.classes.bands.INDICES``), computed per pixel, then averaged;
* ``thermal_mean``: the mean of the thermal band, when there is one;
* ``texture``: the masked local coefficient of variation of brightness (NIR, else the mean of the
  reflective bands): ``mean over crown pixels of sd_local / mean of brightness over the crown``, where
  ``sd_local`` is the standard deviation in a ``texture_px`` square around the pixel over crown pixels
  only. Needle crowns (branches with dark gaps) score higher than leafy crowns; the ratio does not
  depend on illumination.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import rasterio
import shapely
from rasterio import Affine, features
from rasterio.errors import RasterioIOError
from rasterio.windows import Window
from scipy import ndimage

from crownsam.classes.bands import INDICES, REFLECTIVE, THERMAL
from crownsam.common.raster import Stretch, apply_stretch, read_error
from crownsam.tiling.grid import STRIDE, WINDOW, window_offsets
from crownsam.tiling.plan import assign_windows

SKIP_NO_PIXELS = "no_valid_pixels"
SKIP_FEW_PIXELS = "too_few_pixels"
SKIP_UNDEFINED = "undefined_feature"


@dataclass(frozen=True)
class SpectralSpec:
    """What the spectral feature vector holds (see the module docstring)."""

    roles: tuple[tuple[str, int], ...]  # (role, 1-based band), from ``bands.band_roles``
    indices: tuple[str, ...]
    percentiles: tuple[float, ...]
    texture_px: int

    @property
    def role_map(self) -> dict[str, int]:
        return dict(self.roles)

    @property
    def reflective(self) -> list[str]:
        """Reflective roles present, in wavelength order."""
        return [r for r in REFLECTIVE if r in self.role_map]

    def names(self) -> list[str]:
        """Feature names, in vector order."""
        out = []
        for r in self.reflective:
            out.append(f"{r}_mean")
            out += [f"{r}_p{p:g}" for p in self.percentiles]
        out += list(self.indices)
        if THERMAL in self.role_map:
            out.append("thermal_mean")
        out.append("texture")
        return out

    def groups(self) -> list[tuple[str, str]]:
        """(block, group) of each feature, for the scaling: the per-band statistics form one group;
        each index, thermal and texture are a group each."""
        return [("spectral", feature_group(n)) for n in self.names()]


def feature_group(name: str) -> str:
    """The scaling group of a spectral feature name (see :meth:`SpectralSpec.groups`)."""
    if name.split("_")[0] in ("blue", "green", "red", "nir") or name.startswith("red_edge_"):
        return "bands"
    return name


def spectral_spec(
    roles: Mapping[str, int], indices: Sequence[str], percentiles: Sequence[float], texture_px: int
) -> SpectralSpec:
    return SpectralSpec(
        tuple(sorted(roles.items(), key=lambda kv: kv[1])),
        tuple(indices),
        tuple(float(p) for p in percentiles),
        int(texture_px),
    )


def masked_local_cv(x: np.ndarray, inside: np.ndarray, size: int) -> float:
    """``mean_{p in crown} sd_local(p) / mean_{p in crown} x(p)`` with ``sd_local`` over crown pixels in a
    ``size`` x ``size`` square (normalised convolution: pixels outside the crown carry weight 0)."""
    m = inside.astype(np.float64)
    xv = np.where(inside, x, 0.0).astype(np.float64)
    s0 = ndimage.uniform_filter(m, size, mode="constant")
    s1 = ndimage.uniform_filter(xv, size, mode="constant")
    s2 = ndimage.uniform_filter(xv * xv, size, mode="constant")
    s0i = s0[inside]
    mu = s1[inside] / s0i
    var = np.maximum(s2[inside] / s0i - mu * mu, 0.0)
    mean = float(xv[inside].mean())
    return float(np.sqrt(var).mean() / mean) if mean > 0 else float("nan")


def crown_spectral(data: np.ndarray, inside: np.ndarray, spec: SpectralSpec) -> np.ndarray:
    """The spectral feature vector of one crown (module docstring) from a crop ``data`` (all raster
    bands, float) and its crown-and-valid pixel mask ``inside``."""
    roles = spec.role_map
    px = {r: data[b - 1][inside].astype(np.float64) for r, b in roles.items()}
    out: list[float] = []
    for r in spec.reflective:
        v = px[r]
        out.append(float(v.mean()))
        out += [float(q) for q in np.percentile(v, spec.percentiles)] if spec.percentiles else []
    with np.errstate(divide="ignore", invalid="ignore"):
        for name in spec.indices:
            if name == "gcc":
                idx = px["green"] / (px["red"] + px["green"] + px["blue"])
            else:
                a, b = (px[k] for k in INDICES[name].bands)
                idx = (a - b) / (a + b)
            out.append(float(np.mean(idx)))
    if THERMAL in roles:
        out.append(float(px[THERMAL].mean()))
    bright_role = "nir" if "nir" in roles else None
    if bright_role:
        bright = data[roles[bright_role] - 1]
    else:
        bright = np.mean([data[roles[r] - 1] for r in spec.reflective], axis=0)
    out.append(masked_local_cv(bright, inside, spec.texture_px))
    return np.asarray(out, dtype=np.float64)


# --- windows ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowGroup:
    """The crowns of one window and the pixel region read for them (row/col offsets in the raster)."""

    window: Window  # the 1024 px window itself (what SAM2 sees)
    region: Window  # what is read: the crowns' bounding boxes (and the window when ``with_window``)
    members: tuple[int, ...]  # row positions in the crown table


def crown_bounds(pix: np.ndarray) -> np.ndarray:
    """Whole-pixel bounding boxes ``(row0, col0, row1, col1)`` of pixel-space geometries (end exclusive)."""
    b = shapely.bounds(pix)
    return np.column_stack([np.floor(b[:, 1]), np.floor(b[:, 0]), np.ceil(b[:, 3]), np.ceil(b[:, 2])]).astype(
        np.int64
    )


def group_crowns(
    pix: np.ndarray, width: int, height: int, *, with_window: bool, size: int = WINDOW, stride: int = STRIDE
) -> tuple[list[WindowGroup], np.ndarray]:
    """Window groups of pixel-space crown geometries and a skip reason per crown ('' when grouped).

    Reasons from :func:`crownsam.tiling.plan.assign_windows`: ``empty_geometry``, ``outside_raster``,
    ``larger_than_window``. Regions are clipped to the raster.
    """
    rows, cols, reason = assign_windows(pix, width, height, size, stride)
    row_offs, col_offs = window_offsets(height, size, stride), window_offsets(width, size, stride)
    ok = np.flatnonzero(reason == "")
    bounds = crown_bounds(np.where(reason == "", pix, shapely.Point(0, 0)))
    groups: dict[tuple[int, int], list[int]] = {}
    for i in ok:
        groups.setdefault((int(rows[i]), int(cols[i])), []).append(int(i))
    out = []
    for (r, c), members in sorted(groups.items()):
        win = Window(col_offs[c], row_offs[r], min(size, width), min(size, height))
        bb = bounds[members]
        r0, c0 = int(bb[:, 0].min()), int(bb[:, 1].min())
        r1, c1 = int(bb[:, 2].max()), int(bb[:, 3].max())
        if with_window:
            r0, c0 = min(r0, int(win.row_off)), min(c0, int(win.col_off))
            r1, c1 = max(r1, int(win.row_off + win.height)), max(c1, int(win.col_off + win.width))
        r0, c0, r1, c1 = max(r0, 0), max(c0, 0), min(r1, height), min(c1, width)
        out.append(WindowGroup(win, Window(c0, r0, c1 - c0, r1 - r0), tuple(members)))
    return out, reason


def crown_mask(geom: shapely.Geometry, row0: int, col0: int, h: int, w: int) -> np.ndarray:
    """Pixels of the ``h`` x ``w`` crop at (row0, col0) whose centre lies in the pixel-space polygon."""
    if h <= 0 or w <= 0:
        return np.zeros((max(h, 0), max(w, 0)), dtype=bool)
    return features.rasterize(
        [(geom, 1)], out_shape=(h, w), transform=Affine(1, 0, col0, 0, 1, row0), fill=0, dtype="uint8"
    ).astype(bool)


@dataclass
class CrownFeatures:
    """Features of every crown of a table (rows of skipped crowns are NaN)."""

    spectral: np.ndarray  # (n, d)
    names: list[str]
    embedding: np.ndarray | None  # (n, C) pooled SAM2 embeddings, or None
    pixels: np.ndarray  # (n,) crown pixels used
    reason: np.ndarray  # (n,) '' or why the crown has no features
    windows: int = 0  # windows read
    encoder_passes: int = 0


Encoder = Callable[[np.ndarray], np.ndarray]  # RGB uint8 (1024, 1024, 3) -> embedding (C, h, w)


def compute_features(
    src: rasterio.io.DatasetReader,
    pix: np.ndarray,
    spec: SpectralSpec,
    *,
    min_pixels: int = 1,
    encoder: Encoder | None = None,
    rgb_bands: tuple[int, int, int] = (3, 2, 1),
    stretch: Stretch | None = None,
    pad_to: int = WINDOW,
    on_window: Callable[[], None] | None = None,
) -> CrownFeatures:
    """Spectral features (and, with ``encoder``, SAM2 embeddings pooled inside each crown; one encoder
    pass per window, shared by its crowns) for pixel-space crown geometries ``pix`` of ``src``."""
    from crownsam.classes.embedding import pool_embedding

    n = len(pix)
    names = spec.names()
    spectral = np.full((n, len(names)), np.nan)
    pixels = np.zeros(n, dtype=np.int64)
    groups, reason = group_crowns(pix, src.width, src.height, with_window=encoder is not None)
    emb: np.ndarray | None = None
    passes = 0
    for g in groups:
        data, valid = read_region(src, g.region)
        image_embed = None
        if encoder is not None:
            assert stretch is not None, "SAM2 features need the scene-wide RGB stretch"
            rgb = window_rgb(data, valid, g, rgb_bands, stretch, pad_to)
            image_embed = encoder(rgb)
            passes += 1
            if emb is None:
                emb = np.full((n, image_embed.shape[0]), np.nan, dtype=np.float32)
        bounds = crown_bounds(pix[list(g.members)])
        for i, (r0, c0, r1, c1) in zip(g.members, bounds, strict=True):
            r0, c0 = max(int(r0), int(g.region.row_off)), max(int(c0), int(g.region.col_off))
            r1 = min(int(r1), int(g.region.row_off + g.region.height))
            c1 = min(int(c1), int(g.region.col_off + g.region.width))
            inside = crown_mask(pix[i], r0, c0, r1 - r0, c1 - c0)
            lr, lc = r0 - int(g.region.row_off), c0 - int(g.region.col_off)
            inside &= valid[lr : lr + inside.shape[0], lc : lc + inside.shape[1]]
            pixels[i] = int(inside.sum())
            if pixels[i] == 0:
                reason[i] = SKIP_NO_PIXELS
                continue
            if pixels[i] < min_pixels:
                reason[i] = SKIP_FEW_PIXELS
                continue
            crop = data[:, lr : lr + inside.shape[0], lc : lc + inside.shape[1]]
            spectral[i] = crown_spectral(crop, inside, spec)
            if image_embed is not None and emb is not None:
                offset = (r0 - int(g.window.row_off), c0 - int(g.window.col_off))
                emb[i] = pool_embedding(image_embed, inside, offset, (pad_to, pad_to))
        if on_window is not None:
            on_window()
    bad = (reason == "") & ~np.isfinite(spectral).all(axis=1)
    if emb is not None:
        bad |= (reason == "") & ~np.isfinite(emb).all(axis=1)
    reason[bad] = SKIP_UNDEFINED
    return CrownFeatures(spectral, names, emb, pixels, reason.astype(str), len(groups), passes)


def read_region(src: rasterio.io.DatasetReader, region: Window) -> tuple[np.ndarray, np.ndarray]:
    """All bands of ``region`` as float32 and the valid-pixel mask (the raster's dataset mask)."""
    try:
        data = src.read(window=region).astype(np.float32)
        valid = src.dataset_mask(window=region) > 0
    except RasterioIOError as exc:
        raise read_error(src.name, exc) from exc
    return data, valid


def window_rgb(
    data: np.ndarray,
    valid: np.ndarray,
    g: WindowGroup,
    rgb_bands: tuple[int, int, int],
    stretch: Stretch,
    pad_to: int,
) -> np.ndarray:
    """The window's RGB image as SAM2 sees it in pseudolabeling (``read_rgb_window``): the chosen bands,
    the scene-wide stretch to uint8, invalid pixels (dataset mask) 0, padded with 0 to ``pad_to``."""
    r0 = int(g.window.row_off - g.region.row_off)
    c0 = int(g.window.col_off - g.region.col_off)
    h, w = int(g.window.height), int(g.window.width)
    sub = data[[b - 1 for b in rgb_bands], r0 : r0 + h, c0 : c0 + w]
    rgb = apply_stretch(sub, stretch, valid[r0 : r0 + h, c0 : c0 + w])
    out = np.zeros((max(pad_to, h), max(pad_to, w), 3), dtype=np.uint8)
    out[:h, :w] = rgb
    return out
