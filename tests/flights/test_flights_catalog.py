"""The flight catalog: layout rules, flight.yaml validation, one-line reasons, never a crashed scan."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import write_raster

from crownsam.common.errors import InputError
from crownsam.flights import catalog
from crownsam.flights.catalog import FlightMeta, check_ortho, dump_meta, list_flights, parse_meta

GOOD = (
    "date: 2024-06-01\ncrs: EPSG:3067\nbands: [blue, green, red, nir, rededge, thermal]\nsensor: MicaSense\n"
)


def folder(root: Path, flight_id: str, files: tuple[str, ...], meta: str | None = GOOD) -> Path:
    """A flight folder with placeholder data files (listing never opens them) and ``flight.yaml``."""
    d = root / "flights" / flight_id
    d.mkdir(parents=True)
    for name in files:
        (d / name).write_bytes(b"placeholder")
    if meta is not None:
        (d / "flight.yaml").write_text(meta)
    return d


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder(tmp_path, "ok", ("ortho.tif", "coarse.gpkg", "manual.gpkg", "test_area.gpkg"))
    folder(tmp_path, "chm-only", ("ortho.tif", "chm.tif"))
    folder(tmp_path, "uploading", ("ortho.tif", "coarse.gpkg"), meta=None)
    folder(tmp_path, "no-ortho", ("coarse.gpkg",))
    folder(tmp_path, "no-segments", ("ortho.tif",))
    folder(tmp_path, "manual-only", ("ortho.tif", "coarse.gpkg", "manual.gpkg"))
    folder(tmp_path, "area-only", ("ortho.tif", "coarse.gpkg", "test_area.gpkg"))
    folder(tmp_path, "bad-yaml", ("ortho.tif", "coarse.gpkg"), meta="date: [2024\n")
    folder(tmp_path, "bad date", ("ortho.tif", "coarse.gpkg"))
    (tmp_path / "flights" / "README.txt").write_text("not a flight")
    return tmp_path


def test_flights_are_listed_with_their_state_and_reason(root: Path) -> None:
    flights = {f.flight_id: f for f in list_flights(str(root))}
    assert list(flights) == sorted(flights)
    assert set(flights) == {
        "ok", "chm-only", "uploading", "no-ortho", "no-segments", "manual-only", "area-only", "bad-yaml",
        "bad date",
    }  # fmt: skip
    ok = flights["ok"]
    assert ok.complete and ok.has_manual and ok.segments_role == "coarse"
    assert ok.meta == FlightMeta(
        "2024-06-01", "EPSG:3067", ("blue", "green", "red", "nir", "rededge", "thermal"), "MicaSense"
    )
    assert set(ok.files) == {"ortho", "coarse", "manual", "test_area"}
    assert ok.file("ortho") == str(root / "flights" / "ok" / "ortho.tif")
    chm = flights["chm-only"]
    assert chm.complete and not chm.has_manual and chm.segments_role == "chm"
    up = flights["uploading"]
    assert up.state == catalog.INCOMPLETE and "no flight.yaml" in up.reason and up.meta is None
    reasons = {fid: f.reason for fid, f in flights.items() if f.state == catalog.INVALID}
    assert set(reasons) == {"no-ortho", "no-segments", "manual-only", "area-only", "bad-yaml", "bad date"}
    assert reasons["no-ortho"].endswith("no-ortho: no ortho.tif")
    assert "needs coarse.gpkg or chm.tif" in reasons["no-segments"]
    assert "manual.gpkg without test_area.gpkg" in reasons["manual-only"]
    assert "test_area.gpkg without manual.gpkg" in reasons["area-only"]
    assert "bad-yaml/flight.yaml: not valid YAML at line" in reasons["bad-yaml"]
    assert "letters, digits" in reasons["bad date"]
    assert all("\n" not in r for r in reasons.values())


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("- a\n- b\n", "must be a mapping"),
        (GOOD + "snesor: x\n", "unknown key(s) snesor"),
        ("date: 2024-06-01\ncrs: EPSG:3067\nbands: [r, g, b]\n", "missing key(s) sensor"),
        (GOOD.replace("2024-06-01", "June 1"), "date: expected an ISO date"),
        (GOOD.replace("2024-06-01", "2024-13-01"), "not valid YAML (a value that cannot be read: month"),
        (GOOD.replace("EPSG:3067", "EPSG:99999999"), "crs: 'EPSG:99999999' is not a CRS"),
        (GOOD.replace("[blue, green, red, nir, rededge, thermal]", "[]"), "bands: expected a list"),
        (GOOD.replace("[blue, green, red, nir, rededge, thermal]", "[red, red]"), "duplicate name(s) red"),
        (GOOD.replace("[blue, green, red, nir, rededge, thermal]", "[red, 3]"), "every band needs a name"),
        (GOOD.replace("MicaSense", "''"), "sensor: expected a non-empty string"),
    ],
)
def test_bad_flight_yaml_is_one_line_naming_the_file(text: str, problem: str) -> None:
    with pytest.raises(InputError) as err:
        parse_meta(text, "gs://b/flights/x/flight.yaml")
    msg = str(err.value)
    assert msg.startswith("gs://b/flights/x/flight.yaml: ") and problem in msg and "\n" not in msg


def test_flight_yaml_round_trips_and_takes_dates_as_text() -> None:
    meta = FlightMeta("2023-08-30", "EPSG:3067", ("red", "green", "blue"), "RGB", notes="overcast")
    assert parse_meta(dump_meta(meta), "f.yaml") == meta
    assert parse_meta(GOOD.replace("2024-06-01", "'2024-06-01'"), "f.yaml").date == "2024-06-01"
    assert parse_meta(GOOD.replace("2024-06-01", "2024-06-01T10:30:00"), "f.yaml").date == "2024-06-01"


def test_orthophoto_must_match_flight_yaml(tmp_path: Path) -> None:
    d = folder(tmp_path, "f", ("coarse.gpkg",))
    write_raster(d / "ortho.tif", width=64, height=64, bands=6)
    (flight,) = list_flights(str(tmp_path))
    check_ortho(flight, d / "ortho.tif")  # EPSG:3067, 6 bands: fine
    flight.meta = parse_meta(GOOD.replace("EPSG:3067", "EPSG:3035"), "x")
    with pytest.raises(
        InputError, match=r"f/flight.yaml: crs EPSG:3035 differs from the orthophoto's EPSG:3067"
    ):
        check_ortho(flight, d / "ortho.tif")
    flight.meta = parse_meta(GOOD.replace("[blue, green, red, nir, rededge, thermal]", "[r, g, b]"), "x")
    with pytest.raises(InputError, match="bands lists 3 names but the orthophoto has 6 bands"):
        check_ortho(flight, d / "ortho.tif")


def test_a_wrong_root_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such folder"):
        list_flights(str(tmp_path / "nowhere"))
    (tmp_path / "flights").mkdir()
    assert list_flights(str(tmp_path)) == []
