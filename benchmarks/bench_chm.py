"""CHM segmentation speed and memory: the demo scene's CHM, and a large CHM processed in blocks.

Prints Mpx/s, crowns and peak RSS for ``segment_chm_file`` on (1) the default demo scene's CHM (also its
detection F1 against the true crowns) and (2) a large CHM made by mirror-tiling the demo CHM (every other
copy flipped, so canopy continues across the seams; the nodata strips repeat too). Each segmentation runs in
its own child process so its peak RSS is its own; the large CHM is written window by window and read by
blocks, so neither process ever holds it whole.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rasterio
from _report import report  # benchmarks/_report.py (scripts run from this folder)
from rasterio.windows import Window


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(chm: str, out: str, block: int) -> int:
    """Run one segmentation and print its summary with this process's peak RSS (JSON, one line)."""
    from crownsam.chm import segment_chm_file

    t = time.perf_counter()
    s = segment_chm_file(chm, out, block=block)
    s["wall_seconds"] = round(time.perf_counter() - t, 3)
    s["peak_rss_mib"] = round(peak_rss_mib(), 1)
    print(json.dumps(s))
    return 0


def run_child(chm: Path, out: Path, block: int) -> dict:
    cmd = [sys.executable, __file__, "--child", str(chm), str(out), str(block)]
    res = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def mirror_tile(src_path: Path, dst_path: Path, size: int) -> None:
    """Write a ``size`` x ``size`` CHM of mirrored copies of ``src_path`` (window by window, 512 px tiles)."""
    with rasterio.open(src_path) as src:
        tile = src.read(1)
        profile = src.profile | {
            "width": size,
            "height": size,
            "tiled": True,
            "blockxsize": 512,
            "blockysize": 512,
            "compress": "deflate",
            "predictor": 3,
        }
    h, w = tile.shape
    with rasterio.open(dst_path, "w", **profile) as dst:
        for r0 in range(0, size, 512):
            for c0 in range(0, size, 512):
                rows = np.arange(r0, min(size, r0 + 512))
                cols = np.arange(c0, min(size, c0 + 512))
                # reflect: copy k along an axis is flipped when k is odd
                rr = np.where((rows // h) % 2 == 0, rows % h, h - 1 - rows % h)
                cc = np.where((cols // w) % 2 == 0, cols % w, w - 1 - cols % w)
                dst.write(tile[np.ix_(rr, cc)], 1, window=Window(c0, r0, cols.size, rows.size))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096, help="demo scene size (orthophoto pixels)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scene-dir", default="out/bench-scene")
    ap.add_argument("--large", type=int, default=8192, help="side of the large CHM in pixels (0: skip)")
    ap.add_argument("--block", type=int, default=2048)
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--child", nargs=3, metavar=("CHM", "OUT", "BLOCK"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        return child(a.child[0], a.child[1], int(a.child[2]))

    import geopandas as gpd

    from crownsam.chm.evaluate import detection_scores

    scene_dir = Path(a.scene_dir) / f"s{a.size}-seed{a.seed}"
    t = time.perf_counter()
    cmd = [sys.executable, "-m", "crownsam.cli", "demo-data", str(scene_dir), f"--size={a.size}"]
    subprocess.run([*cmd, f"--seed={a.seed}"], check=True, stdout=subprocess.DEVNULL)
    print(f"scene: generated {scene_dir} in {time.perf_counter() - t:.1f} s")
    work = scene_dir / "bench-chm"
    work.mkdir(exist_ok=True)

    demo = run_child(scene_dir / "chm.tif", work / "demo-crowns.gpkg", a.block)
    scores = detection_scores(
        list(gpd.read_file(work / "demo-crowns.gpkg").geometry),
        list(gpd.read_file(scene_dir / "truth.gpkg").geometry),
    )
    figures: dict = {
        "demo_chm": f"{demo['width']} x {demo['height']} px at {demo['res_m']} m "
        f"({a.size} px scene, seed {a.seed})",
        "demo_crowns": demo["crowns"],
        "demo_seconds": demo["seconds"],
        "demo_mpx_per_s": demo["mpx_per_s"],
        "demo_peak_rss_mib": demo["peak_rss_mib"],
        "demo_f1_iou50": round(scores["f1"], 4),
        "demo_precision": round(scores["precision"], 4),
        "demo_recall": round(scores["recall"], 4),
    }
    if a.large:
        big = work / f"chm-mirrored-{a.large}.tif"
        t = time.perf_counter()
        mirror_tile(scene_dir / "chm.tif", big, a.large)
        print(f"large CHM: wrote {big} in {time.perf_counter() - t:.1f} s")
        large = run_child(big, work / "large-crowns.gpkg", a.block)
        figures |= {
            "large_chm": f"{a.large} x {a.large} px ({a.large**2 / 1e6:.1f} Mpx, "
            f"{a.large**2 * 4 / 2**20:.0f} MiB as float32)",
            "large_blocks": f"{large['blocks']} blocks of <= {large['block']} px, "
            f"overlap {large['overlap']} px",
            "large_crowns": large["crowns"],
            "large_seconds": large["seconds"],
            "large_mpx_per_s": large["mpx_per_s"],
            "large_peak_rss_mib": large["peak_rss_mib"],
        }
    report(figures, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
