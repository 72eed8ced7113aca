"""Pseudo-classes against the synthetic species: adjusted Rand index (ARI) per scene seed, and speed.

For each seed, a synthetic scene is generated and ``crownsam pseudo-classes`` (library call, spectral
features, default options) classifies its true crowns (truth.gpkg) with K = 3 given and with K chosen by
silhouette over 2..8. Printed per seed: crowns, ARI with the species for K = 3, the chosen K and its ARI,
the ARI of a perfect broadleaf/conifer split (what K = 2 can reach at best), and seconds. Then the minimum,
median and maximum over seeds: the figures that bound the test in tests/classes/test_classes_quality.py.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
from _report import report  # benchmarks/_report.py (scripts run from this folder)
from sklearn.metrics import adjusted_rand_score


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=1536)
    ap.add_argument("--seeds", default="0..9", help="LO..HI scene seeds (default 0..9)")
    ap.add_argument("--json", help="also write the figures as JSON")
    args = ap.parse_args()
    from crownsam.classes.api import ClassesParams, pseudo_classes
    from crownsam.synthetic import generate_scene

    lo, hi = (int(v) for v in args.seeds.split(".."))
    figures: dict = {}
    k3, auto = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(lo, hi + 1):
            scene = generate_scene(Path(tmp) / f"s{seed}", size=args.size, seed=seed)
            species = gpd.read_file(scene.truth)["species"].to_numpy()
            t = time.perf_counter()
            out = Path(tmp) / f"k3_{seed}.gpkg"
            pseudo_classes(str(scene.ortho), str(scene.truth), str(out), ClassesParams(k=3))
            seconds = time.perf_counter() - t
            a3 = adjusted_rand_score(species, gpd.read_file(out)["pseudo_class"])
            out = Path(tmp) / f"auto_{seed}.gpkg"
            s = pseudo_classes(str(scene.ortho), str(scene.truth), str(out), ClassesParams())
            a_auto = adjusted_rand_score(species, gpd.read_file(out)["pseudo_class"])
            split = adjusted_rand_score(species, np.where(species == "birch", 0, 1))
            k3.append(a3)
            auto.append(a_auto)
            figures[f"seed {seed}"] = (
                f"{len(species)} crowns, ARI K=3 {a3:.3f}, auto K={s['k']} ARI {a_auto:.3f}, "
                f"birch/conifer split ARI {split:.3f}, {seconds:.1f} s"
            )
    figures["ARI K=3 min/median/max"] = f"{min(k3):.3f} / {statistics.median(k3):.3f} / {max(k3):.3f}"
    figures["ARI auto min/median/max"] = f"{min(auto):.3f} / {statistics.median(auto):.3f} / {max(auto):.3f}"
    report(figures, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
