"""The window plan: which segment is prompted in which window, and how to split the work into shards."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import shapely
from rasterio import Affine

from crownsam.common.atomic import write_json
from crownsam.common.errors import InputError
from crownsam.common.raster import RasterInfo, Stretch, check_rgb_bands, compute_stretch, raster_info
from crownsam.common.vector import ID_COLUMN, ReadReport, file_sha256, read_segments
from crownsam.tiling.grid import STRIDE, WINDOW, owner, window_offsets
from crownsam.tiling.params import TileParams

PLAN_VERSION = 1
# Relative cost of one box prompt versus one image embedding (measured: ~0.2 s decoder vs ~5 s encoder).
PROMPT_COST = 0.04

SKIP_EMPTY = "empty_geometry"
SKIP_OUTSIDE = "outside_raster"
SKIP_TOO_LARGE = "larger_than_window"


@dataclass
class WindowTask:
    """One window to process: grid position, pixel offsets and size, and the segments it owns."""

    row: int
    col: int
    row_off: int
    col_off: int
    height: int
    width: int
    segment_ids: list[int]

    @property
    def key(self) -> str:
        return f"r{self.row:03d}c{self.col:03d}"

    @property
    def cost(self) -> float:
        return 1.0 + PROMPT_COST * len(self.segment_ids)


@dataclass
class Plan:
    """A window plan for one orthophoto and one segments file (serialised as JSON)."""

    ortho: str
    segments: str
    segments_sha256: str
    width: int
    height: int
    crs: str
    transform: tuple[float, ...]
    window: int
    stride: int
    rgb_bands: tuple[int, ...]
    stretch: Stretch
    windows_total: int
    windows: list[WindowTask]
    skipped: list[dict] = field(default_factory=list)
    segments_total: int = 0
    shard: tuple[int, int] | None = None
    version: int = PLAN_VERSION

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | Path) -> Path:
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        try:
            d = json.loads(Path(path).read_text())
            if d.get("version") != PLAN_VERSION:
                raise ValueError(f"plan version {d.get('version')} is not {PLAN_VERSION}")
            d["windows"] = [WindowTask(**w) for w in d["windows"]]
            d["transform"] = tuple(d["transform"])
            d["rgb_bands"] = tuple(d["rgb_bands"])
            d["stretch"] = [tuple(s) for s in d["stretch"]]
            d["shard"] = tuple(d["shard"]) if d.get("shard") else None
            return cls(**d)
        except FileNotFoundError as exc:
            raise InputError(path, "plan file not found") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(path, f"not a valid window plan ({exc})") from exc

    @property
    def segments_planned(self) -> int:
        return sum(len(w.segment_ids) for w in self.windows)


def pixel_geometries(gdf: gpd.GeoDataFrame, transform: Affine) -> np.ndarray:
    """Segment geometries in continuous pixel coordinates (x = column, y = row) of a raster's grid."""
    inv = ~transform
    m = np.array([[inv.a, inv.b], [inv.d, inv.e]])
    t = np.array([inv.c, inv.f])
    return shapely.transform(gdf.geometry.values, lambda xy: xy @ m.T + t)


def assign_windows(
    pix: np.ndarray, width: int, height: int, size: int = WINDOW, stride: int = STRIDE
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Window grid (row, col) for each pixel-space geometry, and a skip reason ('' when prompted).

    A segment belongs to the window whose ownership range (its central square, extended to the raster
    edge for edge windows; see ``grid.ownership_bounds``) contains its centroid on both axes.
    """
    n = len(pix)
    reason = np.full(n, "", dtype=object)
    empty = shapely.is_missing(pix) | shapely.is_empty(pix)
    reason[empty] = SKIP_EMPTY
    cent = shapely.get_coordinates(shapely.centroid(np.where(empty, shapely.Point(-1, -1), pix)))
    cx, cy = cent[:, 0], cent[:, 1]
    outside = ~empty & ~((cx >= 0) & (cx < width) & (cy >= 0) & (cy < height))
    reason[outside] = SKIP_OUTSIDE
    b = shapely.bounds(pix)
    big = ~empty & ~outside & (((b[:, 2] - b[:, 0]) > size) | ((b[:, 3] - b[:, 1]) > size))
    reason[big] = SKIP_TOO_LARGE
    rows = owner(cy, window_offsets(height, size, stride), height, size)
    cols = owner(cx, window_offsets(width, size, stride), width, size)
    return rows, cols, reason


def make_plan(
    gdf: gpd.GeoDataFrame,
    info: RasterInfo,
    *,
    segments_path: str,
    segments_sha256: str,
    rgb_bands: tuple[int, ...],
    stretch: Stretch,
    size: int = WINDOW,
    stride: int = STRIDE,
) -> Plan:
    """Build the window plan for segments already in the raster's CRS (with ``segment_id``)."""
    if size <= 0 or stride <= 0 or stride > size:
        raise InputError(None, f"window {size} and stride {stride}: need 0 < stride <= window")
    pix = pixel_geometries(gdf, info.affine)
    rows, cols, reason = assign_windows(pix, info.width, info.height, size, stride)
    ids = gdf[ID_COLUMN].to_numpy()
    row_offs = window_offsets(info.height, size, stride)
    col_offs = window_offsets(info.width, size, stride)
    tasks: dict[tuple[int, int], list[int]] = {}
    for sid, r, c, why in zip(ids, rows, cols, reason, strict=True):
        if not why:
            tasks.setdefault((int(r), int(c)), []).append(int(sid))
    windows = [
        WindowTask(
            row=r,
            col=c,
            row_off=row_offs[r],
            col_off=col_offs[c],
            height=min(size, info.height),
            width=min(size, info.width),
            segment_ids=sorted(sids),
        )
        for (r, c), sids in sorted(tasks.items())
    ]
    skipped: list[dict[str, Any]] = [
        {"segment_id": int(sid), "reason": str(why)} for sid, why in zip(ids, reason, strict=True) if why
    ]
    if not windows:
        reasons = sorted({s["reason"] for s in skipped})
        raise InputError(segments_path, f"no segment can be prompted on {info.path} ({', '.join(reasons)})")
    return Plan(
        ortho=info.path,
        segments=segments_path,
        segments_sha256=segments_sha256,
        width=info.width,
        height=info.height,
        crs=info.crs or "",
        transform=info.transform,
        window=size,
        stride=stride,
        rgb_bands=tuple(rgb_bands),
        stretch=[(float(lo), float(hi)) for lo, hi in stretch],
        windows_total=len(row_offs) * len(col_offs),
        windows=windows,
        skipped=skipped,
        segments_total=len(gdf),
    )


def split_windows(windows: list[WindowTask], n: int) -> list[list[WindowTask]]:
    """Split windows into ``n`` shards of roughly equal work (greedy longest-processing-time first).

    Work of a window = 1 image embedding + ``PROMPT_COST`` per box. Deterministic; each shard's windows
    keep their plan order.
    """
    if n < 1:
        raise ValueError(f"shard count must be >= 1, got {n}")
    order = sorted(range(len(windows)), key=lambda i: (-windows[i].cost, i))
    loads = [0.0] * n
    members: list[list[int]] = [[] for _ in range(n)]
    for i in order:
        k = min(range(n), key=lambda s: (loads[s], s))
        loads[k] += windows[i].cost
        members[k].append(i)
    return [[windows[i] for i in sorted(m)] for m in members]


def shard_plan(plan: Plan, index: int, count: int) -> Plan:
    """The plan restricted to shard ``index`` of ``count`` (0-based)."""
    if not 0 <= index < count:
        raise ValueError(f"shard index {index} is not in 0..{count - 1}")
    d = plan.to_dict()
    d["windows"] = [asdict(w) for w in split_windows(plan.windows, count)[index]]
    d["shard"] = (index, count)
    # skipped segments are reported once, by shard 0
    d["skipped"] = plan.skipped if index == 0 else []
    d["windows"] = [WindowTask(**w) for w in d["windows"]]
    return Plan(**d)


def plan_from_files(
    ortho: str, segments: str, tile: TileParams | None = None
) -> tuple[Plan, gpd.GeoDataFrame, ReadReport]:
    """Validate an orthophoto and its segments and build the window plan (stretch computed once here)."""
    tile = tile or TileParams()
    info = raster_info(ortho)
    bands = check_rgb_bands(info, tile.rgb_bands)
    gdf, report = read_segments(segments, info.crs or "", fix_geometries=tile.fix_geometries)
    stretch = compute_stretch(ortho, bands)
    plan = make_plan(
        gdf,
        info,
        segments_path=str(segments),
        segments_sha256=file_sha256(segments),
        rgb_bands=bands,
        stretch=stretch,
        size=tile.window,
        stride=tile.stride,
    )
    return plan, gdf, report


def check_plan_matches(plan: Plan, plan_path: str, ortho: str, segments: str) -> None:
    """Refuse a plan made for another raster grid or another segments file."""
    info = raster_info(ortho)
    if (info.width, info.height) != (plan.width, plan.height) or not np.allclose(
        info.transform, plan.transform
    ):
        raise InputError(plan_path, f"plan was made for a raster with another size or grid than {ortho}")
    if file_sha256(segments) != plan.segments_sha256:
        raise InputError(plan_path, f"plan was made for another segments file than {segments}; re-run tile")


def tile_files(ortho: str, segments: str, out_plan: str, tile: TileParams | None = None) -> list[int]:
    """Fetch remote inputs, build and save the plan; return the indices of the non-empty shards."""
    from crownsam.common import storage

    tile = tile or TileParams()
    local_ortho = str(storage.fetch(ortho, what="raster"))
    local_segments = str(storage.fetch(segments, what="segments file"))
    plan, _, _ = plan_from_files(local_ortho, local_segments, tile)
    plan.ortho, plan.segments = str(ortho), str(segments)
    plan.save(out_plan)
    return list(range(effective_shards(tile.shards, len(plan.windows))))


def effective_shards(requested: int, windows: int) -> int:
    """Shards actually used: ``min(max(1, requested), windows)`` (no empty shards)."""
    return min(max(1, requested), max(1, windows))
