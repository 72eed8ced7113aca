"""The evaluation report: one self-contained HTML page for people.

Inline CSS, figures as base64 PNG data URIs, no scripts and no external resources, so it reads the same in
a browser, offline, and in the Kubeflow UI's HTML viewer. Figures are drawn with matplotlib's object API
(no pyplot state). The map overlays read only the test area's window of the orthophoto.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import shapely
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patheffects import withStroke
from pyproj import CRS

from crownsam.common.raster import apply_stretch, crs_string, open_raster, raster_info, read_error
from crownsam.common.vector import crs_label, same_crs
from crownsam.evaluation.match import Layer

MANUAL_COLOR = "#ffd60a"  # yellow: visible on canopy, soil and the dark no-ortho background
SET_COLORS = ("#ff3b30", "#32c8ff", "#ff9500", "#bf5af2", "#34c759", "#ff2d92")
NO_ORTHO_BG = "#2f3437"
MAP_MAX_PX = 1400  # longest side of the orthophoto window as read (decimated when larger)
MAP_MARGIN = 0.04  # fraction of the area's larger side added around it on the maps
STRETCH_PCT = (2.0, 98.0)


def set_colors(names: Sequence[str]) -> dict[str, str]:
    """Outline colour of each label set, in order (cycled after six)."""
    return {n: SET_COLORS[i % len(SET_COLORS)] for i, n in enumerate(names)}


def png_data_uri(fig: Figure, dpi: int = 110) -> str:
    """Render a figure to a ``data:image/png;base64,...`` URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor=fig.get_facecolor())
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# --- orthophoto -------------------------------------------------------------------------------------------


def read_ortho_window(
    path: str, bounds: tuple[float, float, float, float], bands: Sequence[int], max_px: int = MAP_MAX_PX
) -> tuple[np.ndarray, tuple[float, float, float, float], CRS] | str:
    """The RGB rendering of the orthophoto inside ``bounds`` (in the raster's CRS), or why there is none.

    Reads only the window covering ``bounds`` (whole pixels, clipped to the raster), decimated so its
    longer side is at most ``max_px`` (average resampling), maps ``bands`` to R,G,B with a 2-98 %
    stretch of the valid pixels of that window: the percentiles of the three bands' values pooled, one
    linear stretch for all three, so hues are kept (per-band stretches turn a canopy window grey-white).
    Returns (uint8 H x W x 3, extent (left, right, bottom, top), raster CRS).
    """
    from rasterio.enums import Resampling
    from rasterio.errors import RasterioIOError
    from rasterio.windows import Window

    with open_raster(path) as src:
        t = src.transform
        if t.b != 0 or t.d != 0:
            return "the orthophoto is rotated (not north-up); outlines only"
        xs, ys = (bounds[0], bounds[2]), (bounds[1], bounds[3])
        cols = [(~t @ (x, y))[0] for x in xs for y in ys]
        rows = [(~t @ (x, y))[1] for x in xs for y in ys]
        c0, c1 = max(0, math.floor(min(cols))), min(src.width, math.ceil(max(cols)))
        r0, r1 = max(0, math.floor(min(rows))), min(src.height, math.ceil(max(rows)))
        if c1 <= c0 or r1 <= r0:
            return "the orthophoto does not cover the test area; outlines only"
        win = Window(c0, r0, c1 - c0, r1 - r0)
        scale = max(1.0, max(win.width, win.height) / max_px)
        shape = (len(bands), max(1, round(win.height / scale)), max(1, round(win.width / scale)))
        try:
            data = src.read(
                list(bands), window=win, out_shape=shape, masked=True, resampling=Resampling.average
            )
        except RasterioIOError as exc:
            raise read_error(path, exc) from exc
        left, top = t @ (c0, r0)
        right, bottom = t @ (c1, r1)
        crs = CRS.from_user_input(crs_string(src.crs))
    valid = ~np.ma.getmaskarray(data).any(axis=0)
    if not valid.any():
        return "the orthophoto has no valid pixels in the test area; outlines only"
    raw = np.ma.getdata(data).astype(np.float64)
    lo, hi = np.percentile(raw[:, valid], STRETCH_PCT)  # one stretch for the three bands: keeps the hues
    stretch = [(float(lo), float(hi) if hi > lo else float(lo) + 1.0)] * raw.shape[0]
    return apply_stretch(raw, stretch, np.asarray(valid)), (left, right, bottom, top), crs


# --- figures ----------------------------------------------------------------------------------------------


def _rings(geoms: Sequence[shapely.Geometry] | np.ndarray) -> list[np.ndarray]:
    """Exterior and interior rings of (multi)polygons as coordinate arrays, for a LineCollection."""
    out = []
    for g in geoms:
        for p in shapely.get_parts(g):
            if p.is_empty:
                continue
            out.append(np.asarray(p.exterior.coords)[:, :2])
            out.extend(np.asarray(r.coords)[:, :2] for r in p.interiors)
    return out


def map_figure(
    name: str,
    color: str,
    manual: np.ndarray,
    jaccard: np.ndarray,
    labels: np.ndarray,
    matched: np.ndarray,
    area: shapely.Geometry,
    extent: tuple[float, float, float, float],
    image: np.ndarray | None,
    mean_j: float,
    area_label: str = "test area",
) -> Figure:
    """One map panel: the orthophoto (or a dark background), the test area, the manual crowns (yellow),
    one label set's outlines in its colour (labels matched to no evaluated crown thinner and faded), and
    each evaluated tree's J at its crown."""
    left, right, bottom, top = extent
    w_in = 6.2
    h_in = max(3.0, min(9.0, w_in * (top - bottom) / max(right - left, 1e-9)))
    foot, head = 0.7, 0.35  # inches for the legend below and the title above
    fig = Figure(figsize=(w_in, h_in + foot + head))
    total = h_in + foot + head
    ax = fig.add_axes((0.01, foot / total, 0.98, h_in / total))
    if image is not None:
        ax.imshow(image, extent=extent, interpolation="bilinear", zorder=0)
    else:
        ax.set_facecolor(NO_ORTHO_BG)
    ax.add_collection(
        LineCollection(_rings([area]), colors="white", linewidths=1.0, linestyles="--", zorder=1)
    )
    ax.add_collection(LineCollection(_rings(manual), colors=MANUAL_COLOR, linewidths=2.2, zorder=2))
    ax.add_collection(
        LineCollection(_rings(labels[~matched]), colors=color, linewidths=0.9, alpha=0.6, zorder=3)
    )
    ax.add_collection(LineCollection(_rings(labels[matched]), colors=color, linewidths=1.6, zorder=3))
    halo = [withStroke(linewidth=2.6, foreground="black")]
    for g, j in zip(manual, jaccard, strict=True):
        pt = g.representative_point()
        ax.annotate(
            f"{j:.2f}",
            (pt.x, pt.y),
            ha="center",
            va="center",
            fontsize=8.5,
            fontweight="bold",
            color="white",
            path_effects=halo,
            zorder=4,
            annotation_clip=True,
        )
    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)
    ax.set_title(f"{name}: mean J {mean_j:.2f}", fontsize=12, loc="left", fontweight="bold")
    handles = [
        Line2D([], [], color=MANUAL_COLOR, lw=2.6, label="manual crown"),
        Line2D([], [], color=color, lw=2.2, label=f"{name} label (matched)"),
        Line2D([], [], color=color, lw=1.1, alpha=0.6, label="unmatched"),
        Line2D([], [], color="#888888", lw=1.2, ls="--", label=area_label),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=2, frameon=False, fontsize=9.5)
    return fig


def scatter_figure(earlier: str, later: str, je: np.ndarray, jl: np.ndarray, color: str) -> Figure:
    """Per-tree J of ``later`` against ``earlier``, with the diagonal: points above it favour ``later``."""
    fig = Figure(figsize=(4.6, 4.6))
    ax = fig.add_axes((0.15, 0.13, 0.8, 0.76))
    ax.plot([0, 1], [0, 1], color="#777777", lw=1, ls="--", zorder=1)
    ax.fill_between([0, 1], [0, 1], [1, 1], color=color, alpha=0.07, zorder=0, lw=0)
    ax.scatter(je, jl, s=34, color=color, edgecolor="#222222", linewidth=0.7, zorder=2, clip_on=False)
    ax.set_xlim(-0.03, 1.03)
    ax.set_ylim(-0.03, 1.03)
    ax.set_aspect("equal")
    ax.set_xlabel(f"Jaccard, {earlier}", fontsize=10)
    ax.set_ylabel(f"Jaccard, {later}", fontsize=10)
    ax.text(0.97, 0.04, f"above the diagonal:\n{later} better", fontsize=8.5, ha="right", color="#555555")
    ax.set_title(f"{later} vs {earlier} per tree (n = {len(je)})", fontsize=11, loc="left")
    ax.grid(alpha=0.25)
    return fig


def histogram_figure(table: pd.DataFrame, colors: dict[str, str]) -> Figure:
    """Distribution of per-tree J for each label set (bins of 0.05), with each mean as a dashed line."""
    fig = Figure(figsize=(5.6, 4.6))
    ax = fig.add_axes((0.12, 0.13, 0.84, 0.76))
    bins = np.linspace(0, 1, 21).tolist()
    for name in table.columns:
        v = table[name].to_numpy()
        ax.hist(v, bins=bins, color=colors[name], alpha=0.28, lw=0)
        ax.hist(
            v, bins=bins, histtype="step", color=colors[name], lw=1.8, label=f"{name} (mean {v.mean():.2f})"
        )
        ax.axvline(v.mean(), color=colors[name], ls="--", lw=1.2)
    ax.set_xlim(0, 1)
    ax.set_xlabel("Jaccard index per tree", fontsize=10)
    ax.set_ylabel("trees", fontsize=10)
    ax.legend(frameon=False, fontsize=9, loc="upper left")
    ax.set_title("Distribution of per-tree Jaccard", fontsize=11, loc="left")
    ax.grid(alpha=0.25, axis="y")
    return fig


# --- text -------------------------------------------------------------------------------------------------


def fmt(v: float, digits: int = 2) -> str:
    """A number for people: fixed decimals, an en dash for undefined values."""
    return "–" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def fmt_signed(v: float) -> str:
    return "–" if not math.isfinite(v) else f"{v:+.2f}".replace("-", "−")


def fmt_p(p: float) -> str:
    if not math.isfinite(p):
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def verdicts(ev) -> list[str]:
    """One plain sentence per comparison (or per label set when there is only one), with the interval."""
    m, n = ev.metrics, int(ev.metrics["n_trees"])
    out = []
    if len(ev.label_sets) == 1:
        s = ev.label_sets[0]
        out.append(
            f"<b>{html.escape(s)}</b> labels match the manual crowns with a mean Jaccard index of "
            f"<b>{fmt(m[f'jaccard_mean/{s}'])}</b> (95 % CI {fmt(m[f'jaccard_ci_low/{s}'])} to "
            f"{fmt(m[f'jaccard_ci_high/{s}'])}, {n} trees); F1 at IoU ≥ 0.5 is {fmt(m[f'f1/{s}'])}."
        )
    for earlier, later in ev.pairs:
        key = f"{later}-{earlier}"
        d, lo, hi = (
            m[f"paired_diff_mean/{key}"],
            m[f"paired_diff_ci_low/{key}"],
            m[f"paired_diff_ci_high/{key}"],
        )
        e, la = html.escape(earlier), html.escape(later)
        means = (
            f"mean Jaccard {fmt(m[f'jaccard_mean/{later}'])} vs {fmt(m[f'jaccard_mean/{earlier}'])}, "
            f"a paired difference of <b>{fmt_signed(d)}</b> (95 % CI {fmt_signed(lo)} to {fmt_signed(hi)}; "
            f"Wilcoxon signed-rank p {'' if fmt_p(m[f'wilcoxon_p/{key}']).startswith('<') else '= '}"
            f"{fmt_p(m[f'wilcoxon_p/{key}'])}; {n} trees)"
        )
        if math.isfinite(lo) and lo > 0:
            out.append(f"<b>{la}</b> labels match the manual crowns <b>better</b> than <b>{e}</b>: {means}.")
        elif math.isfinite(hi) and hi < 0:
            out.append(f"<b>{la}</b> labels match the manual crowns <b>worse</b> than <b>{e}</b>: {means}.")
        else:
            out.append(
                f"<b>No clear difference</b> between <b>{la}</b> and <b>{e}</b> labels: {means}; the "
                "interval includes zero."
            )
    return out


def _cell_bg(j: float) -> str:
    """A light background from red (J = 0) through yellow to green (J = 1)."""
    if not math.isfinite(j):
        return "#ffffff"
    hue = 120 * max(0.0, min(1.0, j))
    return f"hsl({hue:.0f}, 70%, 88%)"


CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #f4f5f7; color: #1d2125; font: 15px/1.5 system-ui, -apple-system, "Segoe UI",
  Roboto, "DejaVu Sans", "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 40px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 0 0 12px; }
.sub { color: #5b636b; margin: 0 0 18px; font-size: 14px; }
.banner { background: #b00020; color: #fff; font-weight: 700; font-size: 17px; padding: 12px 16px;
  border-radius: 8px; margin: 0 0 18px; }
section { background: #fff; border: 1px solid #e2e5e9; border-radius: 10px; padding: 18px 20px;
  margin: 0 0 18px; }
.verdict p { font-size: 16.5px; margin: 0 0 6px; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { padding: 7px 10px; border-bottom: 1px solid #e7e9ec; text-align: right; white-space: nowrap; }
th { background: #f0f2f5; font-weight: 600; font-size: 13.5px; color: #3a4148; }
th:first-child, td:first-child { text-align: left; }
tbody tr:hover { background: #fafbfc; }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 3px; margin-right: 7px;
  vertical-align: -1px; border: 1px solid rgba(0,0,0,.25); }
.ci { color: #5b636b; font-size: 13px; }
.key { white-space: nowrap; margin-left: 12px; }
.figs { display: flex; flex-wrap: wrap; gap: 14px; justify-content: space-between; }
.figs figure { margin: 0; flex: 1 1 340px; }
.maps figure { flex: 1 1 520px; }
img { max-width: 100%; height: auto; display: block; margin: 0 auto; }
figcaption { color: #5b636b; font-size: 13px; margin-top: 4px; }
.pertree td, .pertree th { padding: 4px 10px; font-size: 13.5px; }
.muted { color: #5b636b; font-size: 13.5px; }
ul { margin: 6px 0 0 18px; padding: 0; }
li { margin: 2px 0; }
"""


def _summary_table(ev, colors: dict[str, str]) -> str:
    m = ev.metrics
    rows = []
    for s in ev.label_sets:
        rows.append(
            "<tr>"
            f'<td><span class="swatch" style="background:{colors[s]}"></span>{html.escape(s)}</td>'
            f"<td><b>{fmt(m[f'jaccard_mean/{s}'])}</b> <span class=ci>"
            f"[{fmt(m[f'jaccard_ci_low/{s}'])}, {fmt(m[f'jaccard_ci_high/{s}'])}]</span></td>"
            f"<td>{fmt(m[f'jaccard_median/{s}'])}</td><td>{fmt(m[f'jaccard_std/{s}'])}</td>"
            f"<td>{fmt(m[f'precision/{s}'])}</td><td>{fmt(m[f'recall/{s}'])}</td>"
            f"<td>{fmt(m[f'f1/{s}'])}</td>"
            f"<td>{int(m[f'tp/{s}'])} / {int(m['n_trees'])} / {int(m[f'n_labels_in_area/{s}'])}</td>"
            f"<td>{int(m[f'n_no_overlap/{s}'])}</td>"
            f"<td>{_overlap_cell(m, s)}</td>"
            "</tr>"
        )
    return (
        '<table class="summary"><thead><tr><th>label set</th><th>mean J [95 % CI]</th><th>median J</th>'
        "<th>SD</th><th>precision</th><th>recall</th><th>F1</th><th>TP / trees / labels in area</th>"
        "<th>trees without overlap</th><th>overlapping label pairs (m², share)</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def _overlap_cell(m: dict, s: str) -> str:
    """Overlapping label pairs, their overlap area and its share of the labels' area (labels in area)."""
    pairs = m.get(f"overlap_pairs/{s}")
    if pairs is None or not math.isfinite(pairs):
        return "–"
    share = m.get(f"overlap_share/{s}", math.nan)
    return (
        f"{int(pairs)} <span class=ci>({fmt(m[f'overlap_area_m2/{s}'])} m², "
        f"{fmt(100 * share, 1) if math.isfinite(share) else '–'} %)</span>"
    )


def _paired_table(ev) -> str:
    if not ev.pairs:
        return ""
    m = ev.metrics
    rows = []
    for earlier, later in ev.pairs:
        k = f"{later}-{earlier}"
        rows.append(
            f"<tr><td>{html.escape(later)} − {html.escape(earlier)}</td>"
            f"<td><b>{fmt_signed(m[f'paired_diff_mean/{k}'])}</b></td>"
            f"<td>{fmt_signed(m[f'paired_diff_ci_low/{k}'])} to "
            f"{fmt_signed(m[f'paired_diff_ci_high/{k}'])}</td>"
            f"<td>{fmt_p(m[f'wilcoxon_p/{k}'])}</td>"
            f"<td>{fmt(100 * m[f'paired_same_label/{k}'], 0)} %</td></tr>"
        )
    return (
        "<h2>Paired comparison (same trees)</h2>"
        '<table class="paired"><thead><tr><th>difference in J</th><th>mean</th><th>95 % CI</th>'
        "<th>Wilcoxon p</th><th>same label id matched</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def _per_tree_table(ev, colors: dict[str, str]) -> str:
    t = ev.jaccard_table()
    ids = ev.per_tree.pivot(index="tree_id", columns="label_set", values="label_id").loc[t.index]
    head = "".join(
        f'<th><span class="swatch" style="background:{colors[s]}"></span>J {html.escape(s)}</th>'
        f"<th>{html.escape(s)} label</th>"
        for s in ev.label_sets
    )
    head += "".join(f"<th>{html.escape(la)} − {html.escape(e)}</th>" for e, la in ev.pairs)
    rows = []
    for tid in t.index:
        cells = []
        for s in ev.label_sets:
            j = float(t.loc[tid, s])
            lid = ids.loc[tid, s]
            cells.append(f'<td style="background:{_cell_bg(j)}">{fmt(j)}</td>')
            cells.append(f"<td class=muted>{'–' if pd.isna(lid) else int(lid)}</td>")
        for e, la in ev.pairs:
            cells.append(f"<td>{fmt_signed(float(t.loc[tid, la] - t.loc[tid, e]))}</td>")
        rows.append(f"<tr><td>{int(tid)}</td>{''.join(cells)}</tr>")
    return (
        '<table class="pertree"><thead><tr><th>tree id</th>'
        + head
        + "</tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def _rules(ev) -> list[str]:
    return [
        "Jaccard index J = |manual ∩ label| / |manual ∪ label| per manual crown; each crown is matched to "
        "at most one label and each label to at most one crown, maximising the total J (Hungarian "
        "algorithm); a crown without a match scores 0.",
        html.escape(ev.area_rule[0].upper() + ev.area_rule[1:]) + ".",
        "A detection is a matched pair with J ≥ 0.5. Recall = detected crowns / evaluated crowns; "
        "precision = detecting labels / labels in the area; F1 = 2PR / (P + R).",
        "Overlap: among the labels in the area, the pairs of labels that share area, the sum of those "
        "pairwise shared areas, and that sum as a share of the labels' total area (0 for exclusive "
        "labels).",
        f"Intervals: 95 % percentile bootstrap over trees ({ev.n_boot} resamples, seed {ev.seed}); SD is "
        "the sample standard deviation. Paired differences are later minus earlier label set (as given), "
        "per tree, with a two-sided Wilcoxon signed-rank test.",
        f"Areas computed in {html.escape(crs_label(CRS.from_user_input(ev.crs)) if ev.crs else '?')}.",
    ]


def build_report(
    ev,
    manual: Layer,
    layers: dict[str, Layer],
    area: shapely.Geometry | None,
    *,
    ortho: str | None = None,
    title: str = "crownsam label evaluation",
    banner: str | None = None,
    rgb_bands: tuple[int, ...] = (3, 2, 1),
) -> str:
    """The report page as one HTML string (see the module docstring)."""
    colors = set_colors(ev.label_sets)
    table = ev.jaccard_table()
    pos = {int(i): k for k, i in enumerate(manual.ids)}
    man_geoms = manual.geoms[[pos[int(i)] for i in table.index]]
    area_label = "test area"
    if area is None:
        area = shapely.convex_hull(shapely.union_all(man_geoms))
        area_label = "hull of the manual crowns"

    # Maps: drawn in the evaluation CRS, or in the orthophoto's CRS when it differs.
    map_notes: list[str] = []
    src_crs = CRS.from_user_input(ev.crs) if ev.crs else None
    plot_crs = src_crs
    if ortho:
        ortho_crs = CRS.from_user_input(raster_info(ortho).crs)
        if src_crs is not None and not same_crs(ortho_crs, src_crs):
            map_notes.append(f"maps drawn in the orthophoto's CRS {crs_label(ortho_crs)}")
            plot_crs = ortho_crs
    area_p = _to_crs([area], src_crs, plot_crs)[0]
    xmin, ymin, xmax, ymax = area_p.bounds
    pad = MAP_MARGIN * max(xmax - xmin, ymax - ymin)
    extent = (xmin - pad, xmax + pad, ymin - pad, ymax + pad)
    image = None
    if ortho:
        got = read_ortho_window(ortho, (xmin - pad, ymin - pad, xmax + pad, ymax + pad), rgb_bands)
        if isinstance(got, str):
            map_notes.append(got)
        else:
            image, extent, _ = got
    man_p = _to_crs(man_geoms, src_crs, plot_crs)
    ax0, ay0, ax1, ay1 = area.bounds
    grow = 2 * MAP_MARGIN * max(ax1 - ax0, ay1 - ay0)
    view = shapely.box(ax0 - grow, ay0 - grow, ax1 + grow, ay1 + grow)  # labels to draw, in the eval CRS
    maps = []
    for s in ev.label_sets:
        shown = shapely.intersects(layers[s].geoms, view)
        used = ev.per_tree.loc[ev.per_tree["label_set"] == s, "label_id"].dropna().astype(int)
        fig = map_figure(
            s,
            colors[s],
            man_p,
            table[s].to_numpy(),
            _to_crs(layers[s].geoms[shown], src_crs, plot_crs),
            np.isin(layers[s].ids[shown], used.to_numpy()),
            area_p,
            extent,
            image,
            float(ev.metrics[f"jaccard_mean/{s}"]),
            area_label,
        )
        maps.append(
            f'<figure><img alt="map of {html.escape(s)} labels over the test area" src="{png_data_uri(fig)}">'
            "</figure>"
        )
    figs = [
        f'<figure><img alt="per-tree scatter {html.escape(la)} vs {html.escape(e)}" src="'
        + png_data_uri(scatter_figure(e, la, table[e].to_numpy(), table[la].to_numpy(), colors[la]))
        + '"></figure>'
        for e, la in ev.pairs
    ]
    figs.append(
        '<figure><img alt="histogram of per-tree Jaccard" src="'
        + png_data_uri(histogram_figure(table, colors))
        + '"></figure>'
    )
    n = int(ev.metrics["n_trees"])
    backdrop = "the orthophoto's RGB rendering" if image is not None else "a plain background (no orthophoto)"
    legend = "".join(
        f'<span class="key"><span class="swatch" style="background:{c}"></span>{html.escape(label)}</span>'
        for label, c in [("manual crown", MANUAL_COLOR), *colors.items()]
    )
    notes = [html.escape(x) for x in ev.notes + map_notes]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body><main>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="sub">{n} manual crowns · label sets: '
        + ", ".join(html.escape(s) for s in ev.label_sets)
        + f" · areas in {html.escape(crs_label(src_crs) if src_crs else '?')}</p>",
    ]
    if banner:
        parts.append(f'<div class="banner" role="alert">⚠ {html.escape(banner)}</div>')
    parts += [
        '<section class="verdict"><h2>Verdict</h2>'
        + "".join(f"<p>{v}</p>" for v in verdicts(ev))
        + "</section>",
        "<section><h2>Summary</h2>" + _summary_table(ev, colors),
        '<p class="muted">Jaccard index per manual crown (0 = no overlap, 1 = identical); intervals are 95 % '
        "bootstrap intervals of the mean. Detection at IoU ≥ 0.5.</p>",
        _paired_table(ev) + "</section>",
        '<section><h2>Per-tree Jaccard</h2><div class="figs">' + "".join(figs) + "</div></section>",
        f'<section><h2>Test area</h2><p class="muted">Outlines over {backdrop}; the number on each manual '
        f"crown is its Jaccard index for that label set. {legend}</p>"
        '<div class="figs maps">' + "".join(maps) + "</div></section>",
        "<section><h2>Per tree</h2>" + _per_tree_table(ev, colors) + "</section>",
        "<section><h2>Notes</h2>"
        + ("<ul>" + "".join(f"<li>{x}</li>" for x in notes) + "</ul>" if notes else "<p>None.</p>")
        + "<h2 style='margin-top:14px'>How it is computed</h2><ul>"
        + "".join(f"<li>{r}</li>" for r in _rules(ev))
        + "</ul></section>",
        "</main></body></html>",
    ]
    return "\n".join(parts)


def _to_crs(geoms: Sequence[shapely.Geometry] | np.ndarray, src: CRS | None, dst: CRS | None) -> np.ndarray:
    """Geometries reprojected from ``src`` to ``dst`` (unchanged when either is None or they are equal)."""
    arr = np.asarray(list(geoms), dtype=object)
    if src is None or dst is None or same_crs(src, dst) or len(arr) == 0:
        return arr
    import geopandas as gpd

    return np.asarray(gpd.GeoSeries(arr, crs=src).to_crs(dst).values, dtype=object)
