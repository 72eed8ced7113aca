"""The flight catalog: ``<root>/flights/<flight_id>/`` folders on local disk or in a ``gs://`` bucket.

Layout of one flight (names fixed; see ``components/flights/README.md``)::

    <root>/flights/<flight_id>/
        ortho.tif          required: the multispectral orthophoto
        chm.tif            canopy height model   } at least one of the two: coarse segments are
        coarse.gpkg        coarse crown segments } coarse.gpkg, else segmented from chm.tif
        manual.gpkg        optional, together with test_area.gpkg: manual crowns in a test area
        test_area.gpkg     (the flight then joins the fixed evaluation set)
        flight.yaml        written LAST by the uploader: date, crs, bands, sensor

Rules:

* ``flight_id`` is the folder name and must match ``[A-Za-z0-9._-]+``.
* A folder without ``flight.yaml`` is **incomplete** (an upload in progress): listed, never processed.
* A complete folder is **invalid** (listed with the reason, never processed, never fatal to a scan) when
  ``flight.yaml`` is not a mapping with exactly the keys ``date`` (ISO date), ``crs`` (a CRS that pyproj
  understands, e.g. ``EPSG:3067``), ``bands`` (a non-empty list of distinct names) and ``sensor`` (a
  non-empty string), plus optionally ``notes``; or when ``ortho.tif`` is missing, or neither
  ``coarse.gpkg`` nor ``chm.tif`` is there, or only one of ``manual.gpkg`` / ``test_area.gpkg`` is.
* Listing reads only object names and ``flight.yaml``. Checks that need the orthophoto's header (its CRS
  equals ``crs``, its band count equals ``len(bands)``) run when the flight is processed
  (:func:`check_ortho`), because that is when the orthophoto is fetched anyway.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from crownsam.common import storage
from crownsam.common.errors import CrownsamError, InputError

log = logging.getLogger(__name__)

FLIGHTS_DIR = "flights"
META = "flight.yaml"
FILES = {
    "ortho": "ortho.tif",
    "chm": "chm.tif",
    "coarse": "coarse.gpkg",
    "manual": "manual.gpkg",
    "test_area": "test_area.gpkg",
}
REQUIRED_KEYS = ("date", "crs", "bands", "sensor")
OPTIONAL_KEYS = ("notes",)
ID_PATTERN = re.compile(r"[A-Za-z0-9._-]+")

COMPLETE, INCOMPLETE, INVALID = "complete", "incomplete", "invalid"


@dataclass(frozen=True)
class FlightMeta:
    """The validated content of ``flight.yaml``."""

    date: str  # ISO 8601 date, YYYY-MM-DD
    crs: str  # as written, e.g. "EPSG:3067"
    bands: tuple[str, ...]  # band names in band order (band 1 first)
    sensor: str
    notes: str = ""


@dataclass
class Flight:
    """One folder of the catalog: where it is, which files it has, and whether it can be processed."""

    flight_id: str
    uri: str
    files: dict[str, str] = field(default_factory=dict)  # role (see FILES) -> URI of the file present
    meta: FlightMeta | None = None
    state: str = INCOMPLETE  # complete | incomplete | invalid
    reason: str = ""

    @property
    def complete(self) -> bool:
        return self.state == COMPLETE

    @property
    def has_manual(self) -> bool:
        """Manual crowns and their test area: the flight belongs to the fixed evaluation set."""
        return "manual" in self.files and "test_area" in self.files

    @property
    def segments_role(self) -> str:
        """Where the coarse segments come from: ``coarse`` (the file) or ``chm`` (segmented from it)."""
        return "coarse" if "coarse" in self.files else "chm"

    def file(self, role: str) -> str:
        """The URI of a file the flight has, or '' when it has none."""
        return self.files.get(role, "")


def flights_uri(root: str) -> str:
    """``<root>/flights``."""
    return storage.join(root, FLIGHTS_DIR)


def _relative(item: str, base: str) -> str:
    """The part of a listed file's URI/path below ``base`` (POSIX separators)."""
    if storage.is_remote(base):
        return item[len(base.rstrip("/")) + 1 :]
    return Path(item).relative_to(Path(base).expanduser()).as_posix()


def list_flights(root: str) -> list[Flight]:
    """Every folder under ``<root>/flights/``, sorted by id, each complete, incomplete or invalid (with the
    reason); see the module docstring. An unreadable ``flight.yaml`` makes its flight invalid, never the
    scan fail. A missing ``flights`` folder is an error (wrong root)."""
    base = flights_uri(root)
    if not storage.is_remote(base) and not Path(base).expanduser().is_dir():
        raise InputError(base, "no such folder; the catalog root must hold flights/<flight_id>/")
    names: dict[str, dict[str, str]] = {}
    for item in storage.list_prefix(base):
        parts = _relative(item, base).split("/")
        if len(parts) < 2 or not parts[0]:
            continue  # a file directly under flights/
        entry = names.setdefault(parts[0], {})
        if len(parts) == 2:
            entry[parts[1]] = item
    flights = [
        _flight(flight_id, storage.join(base, flight_id), present) for flight_id, present in names.items()
    ]
    return sorted(flights, key=lambda f: f.flight_id)


def _flight(flight_id: str, uri: str, present: dict[str, str]) -> Flight:
    files = {role: present[name] for role, name in FILES.items() if name in present}
    flight = Flight(flight_id, uri, files)
    if META not in present:
        flight.reason = f"no {META} yet (uploaders write it last): upload in progress?"
        return flight
    try:
        if not ID_PATTERN.fullmatch(flight_id):
            raise CrownsamError(uri, "flight folder names may only use letters, digits, '.', '_' and '-'")
        problem = check_files(files)
        if problem:
            raise CrownsamError(uri, problem)
        flight.meta = parse_meta(storage.read_bytes(present[META]), present[META])
    except CrownsamError as exc:
        flight.state, flight.reason = INVALID, str(exc)
        return flight
    flight.state = COMPLETE
    return flight


def check_files(files: dict[str, str]) -> str:
    """The first problem with the set of files of a complete flight, or ''."""
    if "ortho" not in files:
        return f"no {FILES['ortho']}"
    if "coarse" not in files and "chm" not in files:
        return f"needs {FILES['coarse']} or {FILES['chm']} (coarse segments are derived from the CHM)"
    if ("manual" in files) != ("test_area" in files):
        have, lack = ("manual", "test_area") if "manual" in files else ("test_area", "manual")
        return (
            f"{FILES[have]} without {FILES[lack]}: give both (manual crowns and their test area) or neither"
        )
    return ""


def parse_meta(text: bytes | str, source: str) -> FlightMeta:
    """Validate ``flight.yaml`` (see the module docstring); raise :class:`InputError` naming ``source``."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise InputError(source, f"not valid YAML{where} ({getattr(exc, 'problem', None) or exc})") from exc
    except ValueError as exc:  # a scalar that looks like a date but is none (2024-13-01)
        raise InputError(source, f"not valid YAML (a value that cannot be read: {exc})") from exc
    if not isinstance(data, dict):
        raise InputError(source, f"must be a mapping with keys {', '.join(REQUIRED_KEYS)}")
    unknown = sorted(str(k) for k in data if k not in REQUIRED_KEYS + OPTIONAL_KEYS)
    if unknown:
        raise InputError(
            source,
            f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(REQUIRED_KEYS + OPTIONAL_KEYS)}",
        )
    missing = [k for k in REQUIRED_KEYS if k not in data or data[k] is None]
    if missing:
        raise InputError(source, f"missing key(s) {', '.join(missing)}")
    return FlightMeta(
        date=_date(data["date"], source),
        crs=_crs(data["crs"], source),
        bands=_bands(data["bands"], source),
        sensor=_text(data["sensor"], "sensor", source),
        notes=str(data.get("notes") or ""),
    )


def _date(value: object, source: str) -> str:
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip()).isoformat()
        except ValueError:
            pass
    raise InputError(source, f"date: expected an ISO date like 2024-06-01, got {value!r}")


def _crs(value: object, source: str) -> str:
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    if not isinstance(value, str) or not value.strip():
        raise InputError(source, f"crs: expected a CRS string like EPSG:3067, got {value!r}")
    try:
        CRS.from_user_input(value.strip())
    except CRSError as exc:
        raise InputError(source, f"crs: {value!r} is not a CRS pyproj understands (e.g. EPSG:3067)") from exc
    return value.strip()


def _bands(value: object, source: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise InputError(
            source, f"bands: expected a list of band names like [blue, green, red], got {value!r}"
        )
    names = []
    for v in value:
        if not isinstance(v, str) or not v.strip():
            raise InputError(source, f"bands: every band needs a name (a non-empty string), got {v!r}")
        names.append(v.strip())
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(source, f"bands: duplicate name(s) {', '.join(dup)}")
    return tuple(names)


def _text(value: object, key: str, source: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(source, f"{key}: expected a non-empty string, got {value!r}")
    return value.strip()


def dump_meta(meta: FlightMeta) -> str:
    """``flight.yaml`` text for ``meta`` (what an uploader writes last)."""
    data: dict[str, object] = {
        "date": meta.date,
        "crs": meta.crs,
        "bands": list(meta.bands),
        "sensor": meta.sensor,
    }
    if meta.notes:
        data["notes"] = meta.notes
    return yaml.safe_dump(data, sort_keys=False)


def check_ortho(flight: Flight, ortho_local: str | Path) -> None:
    """The checks that need the orthophoto's header: its CRS is ``flight.yaml``'s ``crs`` and it has
    ``len(bands)`` bands. Raises :class:`InputError` naming ``flight.yaml``."""
    from pyproj import CRS

    from crownsam.common.raster import raster_info
    from crownsam.common.vector import crs_label, same_crs

    assert flight.meta is not None
    info = raster_info(ortho_local)
    source = storage.join(flight.uri, META)
    if info.crs is None:
        raise InputError(flight.file("ortho"), "orthophoto has no CRS")
    if not same_crs(CRS.from_user_input(info.crs), CRS.from_user_input(flight.meta.crs)):
        raise InputError(
            source,
            f"crs {flight.meta.crs} differs from the orthophoto's {crs_label(CRS.from_user_input(info.crs))}",
        )
    if info.count != len(flight.meta.bands):
        raise InputError(
            source,
            f"bands lists {len(flight.meta.bands)} names but the orthophoto has {info.count} bands",
        )


def selected_band_names(flight: Flight, bands: tuple[int, ...]) -> tuple[str, ...] | None:
    """Names of the 1-based ``bands`` in ``flight.yaml`` order; None when a number is past the list."""
    assert flight.meta is not None
    names = flight.meta.bands
    if any(not 1 <= b <= len(names) for b in bands):
        return None
    return tuple(names[b - 1] for b in bands)
