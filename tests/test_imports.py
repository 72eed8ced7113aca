"""Every module of the package imports: a broken import fails here, fast, not inside a pipeline step."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import crownsam
import crownsam.pipelines


def all_modules() -> list[str]:
    """Every module under ``crownsam`` (``crownsam.pipelines`` lives in its own top-level folder)."""
    names = {"crownsam.pipelines"}
    for package in (crownsam, crownsam.pipelines):
        names |= {m.name for m in pkgutil.walk_packages(package.__path__, prefix=package.__name__ + ".")}
    return sorted(names)


MODULES = all_modules()


def test_the_package_has_its_modules() -> None:
    assert {"crownsam.cli", "crownsam.flights.segments", "crownsam.pipelines.local"} <= set(MODULES)
    assert len(MODULES) > 60


@pytest.mark.parametrize("name", MODULES)
def test_module_imports(name: str) -> None:
    importlib.import_module(name)
