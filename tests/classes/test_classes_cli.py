"""``crownsam pseudo-classes`` from the command line: a good run, the bad-input matrix (one line, exit 2,
no output, an older output untouched, SAM2 never loaded for input mistakes), and untrained SAM2 features
end to end."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import pytest
import rasterio

from crownsam import cli
from crownsam.classes.api import output_paths
from crownsam.pseudolabel import sam2_model

try:
    from ..helpers import files_in, write_random_bytes, write_raster, write_segments
except ImportError:  # tests/ collected without __init__.py files (rootdir-relative imports)
    from helpers import files_in, write_random_bytes, write_raster, write_segments

OLD_BYTES = b"an older output that a failed run must leave alone\n"


@dataclass
class Case:
    """One bad invocation: its extra arguments and inputs, what the error line must name and say."""

    extra: list[str] = field(default_factory=list)
    ortho: Path | None = None  # default: the small scene's orthophoto
    labels: Path | None = None  # default: its true crowns
    named: str = ""  # the file or option the line must name
    problem: str = ""
    out_name: str = "classed.gpkg"
    argparse_error: bool = False  # rejected by argparse (SystemExit) rather than by the library


def copy_ortho(scene, d: Path, name: str, descriptions: dict[int, str]) -> Path:
    path = d / name
    shutil.copyfile(scene.ortho, path)
    with rasterio.open(path, "r+") as dst:
        for band, text in descriptions.items():
            dst.set_band_description(band, text)
    return path


def fit_centres(scene, d: Path) -> Path:
    out = d / "fit.gpkg"
    argv = ["pseudo-classes", "--ortho", str(scene.ortho), "--labels", str(scene.truth), "--out", str(out)]
    assert cli.main([*argv, "--k", "2"]) == 0
    return Path(output_paths(str(out))[0])


def edited_centres(scene, d: Path, edit: Callable[[dict], None]) -> Path:
    """A fit's centres file, edited."""
    path = fit_centres(scene, d)
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return path


# Each builder gets (scene, input folder) and returns its Case.
BUILDERS: dict[str, Callable[..., Case]] = {
    "k_larger_than_crowns": lambda s, d: Case(
        ["--k", "500"], named="truth.gpkg", problem="--k 500 is larger"
    ),
    "k_range_beyond_crowns": lambda s, d: Case(
        ["--k-range", "2..300"], named="truth.gpkg", problem="--k-range 2..300 needs more than 300 crowns"
    ),
    "k_range_syntax": lambda s, d: Case(
        ["--k-range", "2-8"], named="--k-range", problem="must look like LO..HI"
    ),
    "k_range_below_2": lambda s, d: Case(
        ["--k-range", "1..4"], named="--k-range", problem="needs 2 <= LO <= HI"
    ),
    "k_range_reversed": lambda s, d: Case(["--k-range", "6..3"], named="--k-range", problem="needs 2 <= LO"),
    "k_below_2": lambda s, d: Case(["--k", "1"], named="--k", problem="must be at least 2"),
    "band_missing_for_index": lambda s, d: Case(
        ortho=copy_ortho(s, d, "no_red_edge.tif", {5: "band 5"}),
        named="no_red_edge.tif",
        problem="index ndre needs band red_edge, which the raster's band descriptions do not name",
    ),
    "band_names_missing_index": lambda s, d: Case(
        ["--band-names", "blue,green,red,nir"],
        named="ortho.tif",
        problem="index ndre needs band red_edge, which --band-names do not name",
    ),
    "no_band_descriptions": lambda s, d: Case(
        ortho=write_raster(d / "plain.tif", width=512, height=512, origin=(385000.0, 6672000.0)),
        named="plain.tif",
        problem="index ndvi needs band nir, red",
    ),
    "unknown_band_name": lambda s, d: Case(
        ["--band-names", "blue,green,purple"], named="--band-names", problem="unknown band name 'purple'"
    ),
    "band_named_twice": lambda s, d: Case(
        ["--band-names", "blue,green,red,nir,nir"], named="ortho.tif", problem="name nir twice"
    ),
    "unknown_index": lambda s, d: Case(
        ["--indices", "ndvi,evi"], named="--indices", problem="unknown index 'evi'"
    ),
    "percentile_out_of_range": lambda s, d: Case(
        ["--percentiles", "0,90"], named="--percentiles", problem="strictly between 0 and 100"
    ),
    "missing_ortho": lambda s, d: Case(ortho=d / "nope.tif", named="nope.tif", problem="raster not found"),
    "corrupt_ortho": lambda s, d: Case(
        ortho=write_random_bytes(d / "random.tif"), named="random.tif", problem="not a readable raster"
    ),
    "missing_labels": lambda s, d: Case(
        labels=d / "nope.gpkg", named="nope.gpkg", problem="crowns file not found"
    ),
    "labels_without_crs": lambda s, d: Case(
        labels=write_segments(d / "nocrs.gpkg", [(385001.0, 6671991.0, 385003.0, 6671993.0)], crs=None),
        named="nocrs.gpkg",
        problem="crowns have no CRS",
    ),
    "labels_outside_raster": lambda s, d: Case(
        ["--k", "2"],
        labels=write_segments(d / "far.gpkg", [(0.0, 0.0, 2.0, 2.0), (10.0, 0.0, 12.0, 2.0)]),
        named="far.gpkg",
        problem="larger than the number of crowns inside the raster (0)",
    ),
    "output_not_gpkg": lambda s, d: Case(
        named="classed.shp", problem="must be a GeoPackage", out_name="classed.shp"
    ),
    "sam2_without_weights": lambda s, d: Case(
        ["--features", "sam2"], named="--features sam2", problem="pass --checkpoint URI"
    ),
    "sam2_missing_checkpoint": lambda s, d: Case(
        ["--features", "both", "--checkpoint", str(d / "no.pt")],
        named="no.pt",
        problem="SAM2 checkpoint not found",
    ),
    "missing_centres": lambda s, d: Case(
        ["--centres", str(d / "no.centres.json")], named="no.centres.json", problem="centres file not found"
    ),
    "not_a_centres_file": lambda s, d: Case(
        ["--centres", str(write_random_bytes(d / "x.centres.json"))], named="x.centres.json", problem="not a"
    ),
    "centres_of_another_kind": lambda s, d: Case(
        ["--centres", str(edited_centres(s, d, lambda m: m.update(format="something-else")))],
        named="fit.centres.json",
        problem="not a crownsam pseudo-classes centres file",
    ),
    "centres_inconsistent": lambda s, d: Case(
        ["--centres", str(edited_centres(s, d, lambda m: m["centres"].pop()))],
        named="fit.centres.json",
        problem="centres file is inconsistent",
    ),
    "centres_without_spectral_options": lambda s, d: Case(
        ["--centres", str(edited_centres(s, d, lambda m: m["spectral"].pop("indices")))],
        named="fit.centres.json",
        problem="centres file lacks spectral options",
    ),
    "centres_with_feature_option": lambda s, d: Case(
        ["--centres", str(fit_centres(s, d)), "--indices", "ndvi"],
        named="--indices",
        problem="fixed by --centres",
    ),
    "centres_with_sam2_options": lambda s, d: Case(
        ["--centres", str(fit_centres(s, d)), "--model", "sam2.1_hiera_s", "--rgb-bands", "1,2,3"],
        named="--rgb-bands, --model",
        problem="fixed by --centres",
    ),
    "centres_for_other_bands": lambda s, d: Case(
        ["--centres", str(fit_centres(s, d)), "--band-names", "blue,green,red,nir,red_edge"],
        named="fit.centres.json",
        problem="centres were fitted on bands blue, green, nir, red, red_edge, thermal",
    ),
    "centres_with_k": lambda s, d: Case(
        ["--centres", str(fit_centres(s, d)), "--k", "3"],
        named="--k",
        problem="not allowed with argument --centres",
        argparse_error=True,
    ),
    "checkpoint_and_untrained": lambda s, d: Case(
        ["--features", "both", "--untrained", "--checkpoint", "x.pt"],
        named="--checkpoint",
        problem="not allowed with argument",
        argparse_error=True,
    ),
}
NEEDS_MODEL = {"sam2_missing_checkpoint"}


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("SAM2 was loaded before the inputs were validated")

    monkeypatch.setattr(sam2_model, "build_sam2_model", refuse)


def argv(scene, case: Case, out: Path) -> list[str]:
    return [
        "pseudo-classes",
        "--ortho",
        str(case.ortho or scene.ortho),
        "--labels",
        str(case.labels or scene.truth),
        "--out",
        str(out),
        "--device",
        "cpu",
        *case.extra,
    ]


def fail_once(args: list[str], case: Case, capfd, caplog) -> str:
    """Run in-process; expect exit 2 and exactly one stderr line; return it."""
    caplog.clear()
    if case.argparse_error:
        with pytest.raises(SystemExit) as exc:
            cli.main(args)
        rc = exc.value.code
    else:
        rc = cli.main(args)
    out, err = capfd.readouterr()
    assert rc == 2, (out, err)
    assert "Traceback" not in err and out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    return lines[0]


@pytest.mark.parametrize("name", list(BUILDERS))
def test_bad_input_one_line_exit_2_no_output(name, small_scene, tmp_path, capfd, caplog, request) -> None:
    if name not in NEEDS_MODEL:
        request.getfixturevalue("no_model")
    (tmp_path / "in").mkdir()
    case = BUILDERS[name](small_scene, tmp_path / "in")
    capfd.readouterr()
    folder = tmp_path / "out"
    target = folder / case.out_name
    line = fail_once(argv(small_scene, case, target), case, capfd, caplog)
    assert line.startswith("crownsam: error: "), line
    assert case.named in line and case.problem in line, line
    assert not folder.exists() or files_in(folder) == []

    folder.mkdir(exist_ok=True)
    target.write_bytes(OLD_BYTES)
    assert fail_once(argv(small_scene, case, target), case, capfd, caplog) == line
    assert files_in(folder) == [target.name] and target.read_bytes() == OLD_BYTES


def test_good_run_prints_one_line_and_writes_three_files(small_scene, tmp_path, capfd) -> None:
    out = tmp_path / "out" / "classed.gpkg"
    args = ["pseudo-classes", "--ortho", str(small_scene.ortho), "--labels", str(small_scene.truth)]
    assert cli.main([*args, "--out", str(out), "--k", "2", "--percentiles", "25,50,75"]) == 0
    stdout, stderr = capfd.readouterr()
    assert stdout.startswith("crownsam: ") and len(stdout.splitlines()) == 1 and stderr == ""
    assert files_in(out.parent) == ["classed.centres.json", "classed.gpkg", "classed.report.html"]
    classed = gpd.read_file(out)
    assert {"f_nir_p25", "f_nir_p50", "f_nir_p75"} <= set(classed.columns)
    model = json.loads(Path(output_paths(str(out))[0]).read_text())
    assert model["spectral"]["percentiles"] == [25.0, 50.0, 75.0] and model["k"] == 2


@pytest.fixture(scope="module")
def sam2_fit(small_scene, tmp_path_factory) -> tuple[Path, str, str]:
    """``--features both --untrained`` on the small scene: (output, stdout, stderr)."""
    out = tmp_path_factory.mktemp("sam2") / "sam.gpkg"
    args = ["pseudo-classes", "--ortho", str(small_scene.ortho), "--labels", str(small_scene.truth)]
    args += ["--out", str(out), "--features", "both", "--untrained", "--device", "cpu", "--k", "2"]
    cmd = [str(Path(sys.executable).with_name("crownsam")), *args]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    return out, res.stdout, res.stderr


def test_untrained_sam2_features_end_to_end(sam2_fit, small_scene, tmp_path, capfd) -> None:
    """Real SAM2 (hiera tiny, random weights, CPU) through the installed command: one encoder pass for the
    scene's one window, the embedding pooled per crown and clustered with the spectral features; every
    output says UNTRAINED; its centres need the same kind of weights."""
    out, stdout, stderr = sam2_fit
    assert "UNTRAINED" in stdout and "UNTRAINED" in stderr and "Traceback" not in stderr
    classed = gpd.read_file(out)
    assert classed["class_sam2_untrained"].all() and set(classed["pseudo_class"]) == {0, 1}
    model = json.loads(Path(output_paths(str(out))[0]).read_text())
    sam_dims = [n for n in model["names"] if n.startswith("sam2_")]
    spectral = [c for c in classed if c.startswith("f_")]
    assert len(sam_dims) == 256 and len(model["names"]) == 256 + len(spectral)
    assert model["sam2"]["untrained"] is True and "UNTRAINED" in model["fitted_on"]["WARNING"]
    report = Path(output_paths(str(out))[1]).read_text()
    assert 'class="banner"' in report and "UNTRAINED SAM2" in report

    base = ["pseudo-classes", "--ortho", str(small_scene.ortho), "--labels", str(small_scene.truth)]
    centres = output_paths(str(out))[0]
    assert cli.main([*base, "--out", str(tmp_path / "no.gpkg"), "--centres", centres]) == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "centres were fitted on SAM2 embeddings: pass --untrained" in err
    assert not (tmp_path / "no.gpkg").exists()


@pytest.mark.slow
def test_untrained_sam2_centres_assign_the_same_classes(sam2_fit, small_scene, tmp_path) -> None:
    """Seeded random weights give the same embeddings, so the saved centres give the fit's classes."""
    out, _, _ = sam2_fit
    base = ["pseudo-classes", "--ortho", str(small_scene.ortho), "--labels", str(small_scene.truth)]
    again = tmp_path / "again.gpkg"
    centres = output_paths(str(out))[0]
    assert cli.main([*base, "--out", str(again), "--centres", centres, "--untrained", "--device", "cpu"]) == 0
    assert (gpd.read_file(again)["pseudo_class"] == gpd.read_file(out)["pseudo_class"]).all()
