"""Which raster band is which (blue, green, red, red edge, NIR, thermal), and the vegetation indices.

Bands are identified from the raster's band descriptions (what ``crownsam demo-data`` writes: ``blue``,
``green``, ``red``, ``nir``, ``red_edge``, ``thermal``; common spellings such as ``NIR``, ``Red Edge``,
``LWIR`` are accepted) or, when given, from an explicit list of names in band order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from crownsam.common.errors import InputError

REFLECTIVE = ("blue", "green", "red", "red_edge", "nir")  # in wavelength order (the spectral profile)
THERMAL = "thermal"
ROLES = (*REFLECTIVE, THERMAL)
SKIP = "-"  # in an explicit list: a band with no role
ALIASES: dict[str, str] = {
    "blue": "blue",
    "b": "blue",
    "green": "green",
    "g": "green",
    "red": "red",
    "r": "red",
    "red_edge": "red_edge",
    "rededge": "red_edge",
    "re": "red_edge",
    "nir": "nir",
    "near_infrared": "nir",
    "nearinfrared": "nir",
    "thermal": "thermal",
    "thermal_infrared": "thermal",
    "lwir": "thermal",
    "tir": "thermal",
}


@dataclass(frozen=True)
class Index:
    """A vegetation index computed per pixel from band roles (then averaged over the crown)."""

    bands: tuple[str, ...]
    formula: str
    why: str


INDICES: dict[str, Index] = {
    "ndvi": Index(
        ("nir", "red"),
        "(NIR − red) / (NIR + red)",
        "green biomass and vigour; dying crowns lose it first",
    ),
    "ndre": Index(
        ("nir", "red_edge"),
        "(NIR − red edge) / (NIR + red edge)",
        "chlorophyll content; does not saturate in dense canopy the way NDVI does",
    ),
    "gndvi": Index(
        ("nir", "green"),
        "(NIR − green) / (NIR + green)",
        "chlorophyll and leaf structure; separates broadleaf from needle crowns",
    ),
    "gcc": Index(
        ("green", "red", "blue"),
        "green / (red + green + blue)",
        "green chromatic coordinate: the light green of birch against dark conifers, independent of "
        "brightness",
    ),
}


def normalise_name(text: str | None) -> str:
    """``"Red Edge"`` -> ``"red_edge"``: lower case, spaces and dashes as underscores."""
    return "_".join((text or "").strip().lower().replace("-", " ").replace("_", " ").split())


def role_of(text: str | None) -> str | None:
    """The role a band name stands for, or None."""
    return ALIASES.get(normalise_name(text)) or ALIASES.get(normalise_name(text).replace("_", ""))


def band_roles(
    source: str, descriptions: Sequence[str | None], names: Sequence[str] | None = None
) -> dict[str, int]:
    """Role -> 1-based band index, from ``names`` (explicit, band order, ``-`` for no role) when given,
    else from the raster's band descriptions (bands without a known name get no role).

    Raises InputError for an explicit list longer than the band count, an unknown explicit name, or a
    role named twice.
    """
    count = len(descriptions)
    if names is not None:
        if len(names) > count:
            raise InputError(
                source, f"--band-names gives {len(names)} names but the raster has {count} bands"
            )
        given = []
        for n in names:
            role = None if n.strip() == SKIP else role_of(n)
            if role is None and n.strip() != SKIP:
                raise InputError(
                    None, f"--band-names: unknown band name {n!r}; use {', '.join(ROLES)} or {SKIP} (no role)"
                )
            given.append(role)
        how = "--band-names"
    else:
        given = [role_of(d) for d in descriptions]
        how = "band descriptions"
    roles: dict[str, int] = {}
    for i, role in enumerate(given, start=1):
        if role is None:
            continue
        if role in roles:
            raise InputError(source, f"{how} name {role} twice (bands {roles[role]} and {i})")
        roles[role] = i
    return roles


def describe_roles(roles: Mapping[str, int]) -> str:
    """``"blue=1, green=2"`` or ``"none"``."""
    return ", ".join(f"{r}={b}" for r, b in sorted(roles.items(), key=lambda kv: kv[1])) or "none"


def check_roles(source: str, roles: Mapping[str, int], indices: Sequence[str], *, explicit: bool) -> None:
    """Every index's bands and at least one reflective band must be present; else one-line InputError."""
    how = "--band-names" if explicit else "the raster's band descriptions"
    for name in indices:
        if name not in INDICES:
            raise InputError(None, f"--indices: unknown index {name!r}; choose from {', '.join(INDICES)}")
        missing = [b for b in INDICES[name].bands if b not in roles]
        if missing:
            raise InputError(
                source,
                f"index {name} needs band {', '.join(missing)}, which {how} do not name (found "
                f"{describe_roles(roles)}); pass --band-names or leave {name} out of --indices",
            )
    if not any(r in roles for r in REFLECTIVE):
        raise InputError(
            source,
            f"no blue, green, red, red_edge or nir band found in {how}; name them with --band-names, "
            "e.g. blue,green,red,nir,red_edge,thermal",
        )
