"""The pseudo-classes report: one self-contained HTML page (inline CSS, figures as base64 PNGs, no
scripts), in the style of the label evaluation report.

Per class: the number of crowns, the mean spectral profile, a map of the classes over the orthophoto and
thumbnails of the crowns nearest the class centre ("typical" crowns). The map reads one decimated window
over the crowns (at most ``MAP_MAX_PX`` on its long side); each thumbnail reads one small window.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import shapely
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.figure import Figure
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from crownsam.classes.bands import INDICES, REFLECTIVE
from crownsam.classes.cluster import Fit
from crownsam.classes.features import CrownFeatures, SpectralSpec
from crownsam.common.raster import apply_stretch, open_raster, read_error
from crownsam.evaluation.report import CSS, MAP_MAX_PX, NO_ORTHO_BG, fmt, png_data_uri, read_ortho_window

# Nominal band centres (nm) of a MicaSense-type camera, for the profile's x axis.
WAVELENGTH = {"blue": 475, "green": 560, "red": 668, "red_edge": 717, "nir": 842}
CLASS_COLORS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
    "#7f7f7f",
)  # fmt: skip
UNCLASSED_COLOR = "#dddddd"
THUMBS = 8  # typical crowns shown per class
THUMB_PX = 160  # thumbnail side as drawn
EXTRA_CSS = """
.thumbs { margin: 0 0 10px; }
.thumbs h3 { font-size: 15px; margin: 10px 0 4px; }
.bar { display: inline-block; height: 10px; background: #8a949e; border-radius: 2px; vertical-align: 0; }
"""


def class_color(k: int) -> str:
    """Colour of class ``k`` (cycled after ten)."""
    return CLASS_COLORS[k % len(CLASS_COLORS)]


def _rings_px(geoms: Sequence[shapely.Geometry] | np.ndarray) -> list[np.ndarray]:
    out = []
    for g in geoms:
        for p in shapely.get_parts(g):
            if p.is_empty:
                continue
            out.append(np.asarray(p.exterior.coords)[:, :2])
    return out


def profile_figure(feats: CrownFeatures, spec: SpectralSpec, klass: np.ndarray, k: int) -> Figure:
    """Mean of the crowns' band means per class (line) with +-1 SD (band), bands at nominal wavelengths."""
    bands = spec.reflective
    cols = [feats.names.index(f"{b}_mean") for b in bands]
    x = list(range(len(bands)))  # equally spaced: red and red edge are only 50 nm apart
    fig = Figure(figsize=(6.2, 4.2))
    ax = fig.add_axes((0.13, 0.14, 0.6, 0.76))
    for c in range(k):
        v = feats.spectral[klass == c][:, cols]
        if not len(v):
            continue
        m, s = v.mean(axis=0), v.std(axis=0)
        ax.plot(x, m, "-o", color=class_color(c), lw=2, ms=4, label=f"class {c} (n = {len(v)})")
        ax.fill_between(x, m - s, m + s, color=class_color(c), alpha=0.12, lw=0)
    ax.set_xticks(x, [f"{b}\n{WAVELENGTH[b]} nm" for b in bands], fontsize=8.5)
    ax.set_ylabel("mean pixel value in the crown (raster units)", fontsize=9.5)
    ax.set_title("Mean spectral profile per class (±1 SD)", fontsize=11, loc="left")
    ax.grid(alpha=0.25)
    ax.legend(frameon=False, fontsize=8.5, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def silhouette_figure(scores: dict[str, float], chosen: int) -> Figure:
    """Mean silhouette for each K tried, the chosen K marked."""
    ks = sorted(int(k) for k in scores)
    fig = Figure(figsize=(4.6, 3.4))
    ax = fig.add_axes((0.16, 0.17, 0.78, 0.7))
    ax.plot(ks, [scores[str(k)] for k in ks], "-o", color="#3a4148")
    ax.plot([chosen], [scores[str(chosen)]], "o", ms=11, mfc="none", mec="#d62728", mew=2)
    ax.set_xticks(ks)
    ax.set_xlabel("K (number of classes)", fontsize=9.5)
    ax.set_ylabel("mean silhouette", fontsize=9.5)
    ax.set_title(f"Choice of K: {chosen}", fontsize=11, loc="left")
    ax.grid(alpha=0.25)
    return fig


def map_figure(
    image: np.ndarray | None,
    extent: tuple[float, float, float, float],
    pix: np.ndarray,
    klass: np.ndarray,
    k: int,
) -> Figure:
    """The classes over the orthophoto in pixel coordinates: filled crowns in their class colour,
    unclassified crowns as grey outlines."""
    left, right, bottom, top = extent  # pixel coordinates: bottom is the larger row
    w_in = 8.0
    h_in = max(3.0, min(11.0, w_in * (bottom - top) / max(right - left, 1e-9)))
    fig = Figure(figsize=(w_in, h_in))
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    if image is not None:
        ax.imshow(image, extent=(left, right, bottom, top), interpolation="bilinear", zorder=0)
    else:
        ax.set_facecolor(NO_ORTHO_BG)
    for c in range(k):
        rings = _rings_px(pix[klass == c])
        ax.add_collection(PolyCollection(rings, facecolors=class_color(c), alpha=0.45, lw=0, zorder=1))
        ax.add_collection(LineCollection(rings, colors=class_color(c), linewidths=1.2, zorder=2))
    ax.add_collection(
        LineCollection(_rings_px(pix[klass < 0]), colors=UNCLASSED_COLOR, linewidths=0.9, zorder=2)
    )
    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)
    ax.set_aspect("equal")
    ax.set_axis_off()
    return fig


def _map_image(
    ortho: str, pix: np.ndarray, rgb_bands: Sequence[int]
) -> tuple[np.ndarray | None, tuple[float, float, float, float], str | None]:
    """The orthophoto under the crowns (decimated window) and its extent in pixel coordinates."""
    valid = pix[~(shapely.is_missing(pix) | shapely.is_empty(pix))]
    c0, r0, c1, r1 = shapely.total_bounds(valid)
    pad = 0.03 * max(c1 - c0, r1 - r0, 1.0)
    with open_raster(ortho) as src:
        t = src.transform
        c0, r0 = max(0.0, c0 - pad), max(0.0, r0 - pad)
        c1, r1 = min(float(src.width), c1 + pad), min(float(src.height), r1 + pad)
    extent = (c0, c1, r1, r0)
    if c1 <= c0 or r1 <= r0:
        return None, (0.0, 1.0, 1.0, 0.0), "the crowns lie outside the orthophoto"
    x0, y0 = t @ (c0, r0)
    x1, y1 = t @ (c1, r1)
    got = read_ortho_window(
        ortho, (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)), rgb_bands, MAP_MAX_PX
    )
    if isinstance(got, str):
        return None, extent, got
    image, (left, right, bottom, top), _ = got
    inv = ~t
    pl, pt = inv @ (left, top)
    pr, pb = inv @ (right, bottom)
    return image, (pl, pr, pb, pt), None


def read_thumbnail(
    src: Any, geom: shapely.Geometry, rgb_bands: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, Window]:
    """The chosen bands and valid mask of a square window around a pixel-space crown (its box + 25 %)."""
    c0, r0, c1, r1 = shapely.bounds(geom)
    side = max(c1 - c0, r1 - r0) * 1.25 + 8
    cc, rc = (c0 + c1) / 2, (r0 + r1) / 2
    win = Window(math.floor(cc - side / 2), math.floor(rc - side / 2), math.ceil(side), math.ceil(side))
    try:
        data = src.read(list(rgb_bands), window=win, boundless=True, fill_value=0)
        mask = src.dataset_mask(window=win, boundless=True) > 0
    except RasterioIOError as exc:
        raise read_error(src.name, exc) from exc
    return data.astype(np.float32), mask, win


def pooled_stretch(
    crops: Sequence[tuple[np.ndarray, np.ndarray, Window]], n_bands: int
) -> list[tuple[float, float]]:
    """One linear 2-98 % stretch for all thumbnails and all three bands (pooled): hues are kept and
    classes can be compared by brightness."""
    values = [d[:, m].ravel() for d, m, _ in crops if m.any()]
    if not values:
        return [(0.0, 1.0)] * n_bands
    lo, hi = np.percentile(np.concatenate(values), (2.0, 98.0))
    return [(float(lo), float(hi) if hi > lo else float(lo) + 1.0)] * n_bands


def thumbnails_figure(
    crops: Sequence[tuple[np.ndarray, np.ndarray, Window]],
    geoms: Sequence[shapely.Geometry],
    stretch: list[tuple[float, float]],
    color: str,
) -> Figure:
    """One row of crown thumbnails with the crown's outline."""
    fig = Figure(figsize=(THUMBS * 1.25, 1.35))
    for j, ((data, mask, win), geom) in enumerate(zip(crops, geoms, strict=True)):
        ax = fig.add_axes((j / THUMBS + 0.004, 0.02, 1 / THUMBS - 0.008, 0.96))
        img = apply_stretch(data, stretch, mask)
        x0, y0 = win.col_off, win.row_off
        ax.imshow(img, extent=(x0, x0 + win.width, y0 + win.height, y0), interpolation="nearest")
        ax.add_collection(LineCollection(_rings_px([geom]), colors=color, linewidths=1.6))
        ax.set_xlim(x0, x0 + win.width)
        ax.set_ylim(y0 + win.height, y0)
        ax.set_axis_off()
    return fig


def typical_members(klass: np.ndarray, distance: np.ndarray, c: int, n: int = THUMBS) -> np.ndarray:
    """Up to ``n`` crowns of class ``c`` nearest its centre (ties by row order)."""
    idx = np.flatnonzero(klass == c)
    return idx[np.argsort(distance[idx], kind="stable")[:n]]


def _class_table(
    feats: CrownFeatures, spec: SpectralSpec, klass: np.ndarray, distance: np.ndarray, k: int
) -> str:
    shown = [n for n in (*spec.indices, "thermal_mean", "texture") if n in feats.names]
    total = max(int((klass >= 0).sum()), 1)
    head = "".join(f"<th>{html.escape(n)}</th>" for n in shown)
    rows = []
    for c in range(k):
        sel = klass == c
        cnt = int(sel.sum())
        means = [
            float(np.mean(feats.spectral[sel, feats.names.index(n)])) if cnt else math.nan for n in shown
        ]
        cells = "".join(f"<td>{fmt(v, 3)}</td>" for v in means)
        share = cnt / total
        rows.append(
            f'<tr><td><span class="swatch" style="background:{class_color(c)}"></span>class {c}</td>'
            f"<td><b>{cnt}</b></td><td>{100 * share:.1f} % "
            f'<span class="bar" style="width:{max(1, round(80 * share))}px"></span></td>'
            f"<td>{fmt(float(np.mean(distance[sel])) if cnt else float('nan'))}</td>{cells}</tr>"
        )
    return (
        '<table class="classes"><thead><tr><th>class</th><th>crowns</th><th>share</th>'
        f"<th>mean distance to centre</th>{head}</tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def _rules(summary: dict[str, Any], spec: SpectralSpec) -> list[str]:
    p = summary["params"]
    idx = "; ".join(f"{n} = {INDICES[n].formula} ({INDICES[n].why})" for n in spec.indices)
    pct = ", ".join(f"{q:g}" for q in spec.percentiles)
    rules = [
        "A crown's pixels: pixel centres inside its polygon that are valid in the orthophoto; crowns with "
        f"fewer than {p['min_pixels']} such pixels, or outside the raster, get no class (−1).",
        "Spectral features: per band (" + ", ".join(b for b in REFLECTIVE if b in spec.role_map) + ") the "
        f"mean and percentiles {pct} of the crown's pixels; indices averaged over the pixels: "
        f"{html.escape(idx) or 'none'}; the thermal mean; texture = mean local SD of NIR brightness in a "
        f"{spec.texture_px} px square (crown pixels only) / the crown's mean NIR.",
        "Features are standardised (z-scores over the crowns); the per-band statistics, each index, "
        "thermal and texture (and the SAM2 embedding) each get the same total weight.",
        f"Clustering: scikit-learn MiniBatchKMeans, {p['restarts']} runs per K (seeds from {p['seed']}), the "
        "lowest inertia kept; "
        "K chosen by the highest mean silhouette over the range when not given. Classes are numbered by "
        "size, largest first; each crown takes its nearest centre.",
    ]
    if summary["features"] in ("sam2", "both"):
        rules.append(
            f"SAM2 features: {html.escape(str(summary['sam2']['model']))} image-encoder embedding of each "
            "1024 px window (one pass per window), upsampled bilinearly and averaged over the crown's "
            "pixels (ALPS)."
        )
    return rules


def build_report(
    ortho: str,
    frame: Any,
    pix: np.ndarray,
    feats: CrownFeatures,
    spec: SpectralSpec,
    fit: Fit,
    summary: dict[str, Any],
    *,
    rgb_bands: Sequence[int] = (3, 2, 1),
    banner: str | None = None,
    title: str = "crownsam pseudo-classes",
) -> str:
    """The report page as one HTML string (see the module docstring)."""
    klass = frame["pseudo_class"].to_numpy()
    distance = frame["class_distance"].to_numpy()
    k = fit.k
    image, extent, note = _map_image(ortho, pix, rgb_bands)
    figs = [
        '<figure><img alt="mean spectral profile per class" src="'
        + png_data_uri(profile_figure(feats, spec, klass, k))
        + '"></figure>'
    ]
    if len(fit.silhouette) > 1 and summary.get("assigned_from") is None:
        figs.append(
            '<figure><img alt="silhouette per K" src="'
            + png_data_uri(silhouette_figure(summary["silhouette"], k))
            + '"></figure>'
        )
    map_img = png_data_uri(map_figure(image, extent, pix, klass, k), dpi=100)
    chosen = {c: typical_members(klass, distance, c) for c in range(k)}
    with open_raster(ortho) as src:
        crops = {c: [read_thumbnail(src, pix[i], rgb_bands) for i in m] for c, m in chosen.items()}
    stretch = pooled_stretch([x for v in crops.values() for x in v], len(rgb_bands))
    thumbs = []
    for c in range(k):
        if not len(chosen[c]):
            continue
        fig = thumbnails_figure(crops[c], list(pix[chosen[c]]), stretch, class_color(c))
        thumbs.append(
            f'<div class="thumbs"><h3><span class="swatch" style="background:{class_color(c)}"></span>'
            f"class {c}: {len(chosen[c])} crowns nearest the centre</h3>"
            f'<img alt="typical crowns of class {c}" src="{png_data_uri(fig, dpi=100)}"></div>'
        )
    keys = [(f"class {c}", class_color(c)) for c in range(k)] + [("no class", UNCLASSED_COLOR)]
    legend = "".join(
        f'<span class="key"><span class="swatch" style="background:{col}"></span>{name}</span>'
        for name, col in keys
    )
    skipped = ", ".join(f"{n} {html.escape(r)}" for r, n in summary["skipped_by_reason"].items()) or "none"
    how = (
        f"assigned to the centres of {html.escape(str(summary['assigned_from']))}"
        if summary.get("assigned_from")
        else f"K = {k}" + (" (given)" if summary["params"]["k"] else " (chosen by silhouette)")
    )
    notes = [html.escape(note)] if note else []
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{CSS}{EXTRA_CSS}</style></head><body><main>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="sub">{summary["classified"]} of {summary["crowns"]} crowns classified · {how} · '
        f"features: {html.escape(summary['features'])} ({summary['feature_count']}) · bands: "
        f"{html.escape(summary['band_roles'])}</p>",
    ]
    if banner:
        parts.append(f'<div class="banner" role="alert">⚠ {html.escape(banner)}</div>')
    parts += [
        "<section><h2>Classes</h2>" + _class_table(feats, spec, klass, distance, k),
        f'<p class="muted">Without a class: {skipped}. Classes are found without labels: they group '
        "crowns that look alike; which species or condition a class stands for is for people to say.</p>"
        "</section>",
        '<section><h2>Spectra</h2><div class="figs">' + "".join(figs) + "</div></section>",
        f'<section><h2>Map</h2><p class="muted">{legend}</p><figure><img alt="map of the classes" '
        f'src="{map_img}"></figure></section>',
        "<section><h2>Typical crowns</h2>" + "".join(thumbs) + "</section>",
        "<section><h2>Notes</h2>"
        + ("<ul>" + "".join(f"<li>{x}</li>" for x in notes) + "</ul>" if notes else "<p>None.</p>")
        + "<h2 style='margin-top:14px'>How it is computed</h2><ul>"
        + "".join(f"<li>{r}</li>" for r in _rules(summary, spec))
        + "</ul></section>",
        "</main></body></html>",
    ]
    return "\n".join(parts)
