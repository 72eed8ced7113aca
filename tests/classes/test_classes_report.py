"""The pseudo-classes report renders in headless chromium: tables, figures, map and thumbnails."""

from __future__ import annotations

import base64
import io
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crownsam.classes.api import ClassesParams, output_paths, pseudo_classes
from crownsam.classes.report import class_color


@pytest.fixture(scope="module")
def report(species_scene, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("report") / "classed.gpkg"
    s = pseudo_classes(str(species_scene.ortho), str(species_scene.truth), str(out), ClassesParams(k=3))
    return Path(output_paths(str(out))[1]), s


def run_chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium") or "/usr/bin/chromium"
    assert Path(exe).exists(), "Debian's chromium is needed for the report test (make system-deps)"
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp / 'profile'}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def colour_pixels(img: np.ndarray, hex_rgb: str, tol: int = 40) -> int:
    target = np.array([int(hex_rgb[i : i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(img - target).sum(axis=2) <= tol).sum())


def test_report_renders_in_headless_chromium(report, tmp_path) -> None:
    path, summary = report
    url = path.resolve().as_uri()
    dom = run_chromium(tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = dom.stdout
    table = re.search(r'<table class="classes">.*?</table>', page, re.S)
    assert table and len(re.findall(r"<tr>", table.group(0))) == 1 + summary["k"]
    for c, n in enumerate(summary["counts"]):
        assert f"class {c}</td><td><b>{n}</b>" in table.group(0)
    images = re.findall(r'<img [^>]*src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 1 + 1 + summary["k"]  # profile, map, one row of thumbnails per class
    sizes = [png_size(base64.b64decode(b)) for b in images]
    assert all(w >= 300 and h >= 100 for w, h in sizes), sizes
    assert 'src="http' not in page and "<script" not in page  # self-contained
    assert 'class="banner"' not in page  # no SAM2 here, nothing untrained to warn about

    shot = tmp_path / "report.png"
    res = run_chromium(tmp_path, "--window-size=1280,3200", f"--screenshot={shot}", url)
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    img = np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("RGB")).astype(int)
    assert img.shape == (3200, 1280, 3)
    assert img.std() > 30  # not a blank page
    for c in range(summary["k"]):  # each class's outlines on the map and thumbnails
        assert colour_pixels(img, class_color(c)) > 1500, c
