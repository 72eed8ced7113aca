"""`crownsam flights scan` and `crownsam flights retrain --local` on a local catalog (MLflow: a sqlite store
in the work area, the default without a tracking URI)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flight_helpers import make_scene, upload_flight

from crownsam import cli


@pytest.fixture
def catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("CROWNSAM_CACHE", str(tmp_path / "cache"))
    scene = make_scene(tmp_path / "scene", seed=31)
    root = tmp_path / "catalog"
    upload_flight(scene, str(root / "flights" / "F1"))
    upload_flight(scene, str(root / "flights" / "F2"), files=("ortho.tif", "chm.tif"), meta=None)
    upload_flight(scene, str(root / "flights" / "F3"), files=("ortho.tif", "coarse.gpkg", "manual.gpkg"))
    return root


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root`` with its size and modification time."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def test_scan_prints_a_table_and_json(catalog: Path, capfd) -> None:
    before = tree(catalog)
    assert cli.main(["flights", "scan", "--root", str(catalog)]) == 0
    out = capfd.readouterr().out.splitlines()
    assert out[0].split() == ["flight_id", "status", "date", "manual", "reason"]
    rows = {line.split()[0]: line for line in out[1:-1]}
    assert rows["F1"].split()[1:4] == ["new", "2024-06-01", "yes"] and "not processed yet" in rows["F1"]
    assert rows["F2"].split()[1] == "incomplete" and "no flight.yaml" in rows["F2"]
    assert rows["F3"].split()[1] == "invalid" and "manual.gpkg without test_area.gpkg" in rows["F3"]
    assert out[-1] == (
        "crownsam: 3 flight folder(s): 1 new, 0 processed, 1 incomplete, 1 invalid; "
        "next retraining: pseudolabel"
    )
    assert cli.main(["flights", "scan", "--root", str(catalog), "--json"]) == 0
    data = json.loads(capfd.readouterr().out)
    assert data["action"] == "pseudolabel" and data["new"] == ["F1"]
    # A scan only reads: the catalog is unchanged (before, it created work/mlflow.db, the default store of
    # a local work area; an absent store now simply holds no processed flight).
    assert tree(catalog) == before and not (catalog / "work").exists()


def test_bad_invocations_are_one_line(catalog: Path, tmp_path: Path, capfd) -> None:
    assert cli.main(["flights", "scan", "--root", str(tmp_path / "nowhere")]) == 2
    assert not (tmp_path / "nowhere").exists()  # nothing created for a wrong root
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith(
        "nowhere/flights: no such folder; the catalog root must hold flights/<flight_id>/"
    )
    assert cli.main(["flights", "retrain", "--root", str(catalog), "--local"]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pass --checkpoint URI or --untrained" in err[0]
    with pytest.raises(SystemExit) as exit_:
        cli.main(["flights", "retrain", "--root", str(catalog)])
    assert exit_.value.code == 2
    assert "one of the arguments --local --submit-to is required" in capfd.readouterr().err


def test_dry_run_says_what_would_be_done(catalog: Path, capfd) -> None:
    argv = ["flights", "retrain", "--root", str(catalog), "--local", "--untrained", "--dry-run"]
    assert cli.main(argv) == 0
    captured = capfd.readouterr()
    assert captured.out.strip() == "crownsam: would pseudolabel F1 and retrain"
    assert not (catalog / "work" / "flights").exists()


@pytest.mark.slow
def test_local_retrain_with_untrained_sam2(catalog: Path, capfd) -> None:
    """The whole command with real (untrained) SAM2 and real Mask R-CNN training, then the no-op."""
    argv = ["flights", "retrain", "--root", str(catalog), "--local", "--untrained", "--device", "cpu",
            "--chip", "256", "--max-iters", "1", "--batch-size", "1", "--epochs", "1", "--val-block", "1",
            "--buffer", "0.5", "--registered-model-name", "cli-test"]  # fmt: skip
    assert cli.main(argv) == 0
    captured = capfd.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines[0] == "crownsam: pseudolabeled F1"
    assert "trained on 1 flight(s) (F1)" in lines[1] and "champion" in lines[1]
    assert "UNTRAINED SAM2" in captured.err
    labels = list((catalog / "work" / "flights" / "F1").rglob("pseudolabels.summary.json"))
    assert len(labels) == 1 and json.loads(labels[0].read_text())["untrained"] is True
    assert cli.main(argv) == 0
    assert "up-to-date: no new flight" in capfd.readouterr().out
