"""The parameter mechanism: one dataclass -> command-line options, pipeline scalars, checked values."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from crownsam.common.cli_util import OneLineParser
from crownsam.common.errors import CrownsamError
from crownsam.common.params import Params, add_options, param


@dataclass(frozen=True)
class Demo(Params):
    """A parameter of every kind the steps use."""

    chip: int = param(256, "chip size", ge=16)
    share: float = param(0.25, "a share", ge=0.0, lt=1.0, pipeline="demo_share")
    bands: tuple[int, ...] = param((3, 2, 1), "bands")
    limit: int | None = param(None, "optional limit", unset=0)
    uri: str | None = param(None, "optional URI", unset="")
    flag: bool = param(False, "a switch")
    on: bool = param(True, "on unless --no-on")
    mode: str = param("a", "a mode", choices=("a", "b"))
    local_only: int = param(1, "not a pipeline parameter", pipeline=None, ge=1)


def parse(argv: list[str]) -> argparse.Namespace:
    p = OneLineParser(prog="crownsam demo")
    add_options(p, Demo)
    return p.parse_args(argv)


def test_cli_options_come_from_the_fields() -> None:
    assert Demo.from_args(parse([])) == Demo()
    args = parse(["--chip", "64", "--share", "0.5", "--bands", "1,2", "--limit", "3", "--flag", "--no-on"])
    d = Demo.from_args(args)
    assert (d.chip, d.share, d.bands, d.limit, d.flag, d.on) == (64, 0.5, (1, 2), 3, True, False)
    assert Demo.given(args) == {
        "chip": 64,
        "share": 0.5,
        "bands": (1, 2),
        "limit": 3,
        "flag": True,
        "on": False,
    }


def test_help_shows_defaults(capsys) -> None:
    with pytest.raises(SystemExit):
        parse(["--help"])
    out = capsys.readouterr().out
    assert "chip size (default 256)" in out and "(default 3,2,1)" in out and "--no-on" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--chip", "8"], "--chip must be at least 16, got 8"),
        (["--share", "1"], "--share must be in [0, 1), got 1.0"),
        (["--local-only", "0"], "--local-only must be a positive integer, got 0"),
        (["--mode", "c"], "invalid choice: 'c'"),
        (["--bands", "x"], "bands"),
    ],
)
def test_bad_values_are_one_line(argv: list[str], message: str, capsys) -> None:
    try:
        Demo.from_args(parse(argv))
    except SystemExit as exc:  # argparse's own errors
        assert exc.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
        return
    except CrownsamError as exc:
        assert message in str(exc) and "\n" not in str(exc)
        return
    pytest.fail("accepted")


def test_pipeline_scalars_round_trip() -> None:
    assert Demo.pipeline_defaults() == {
        "chip": 256, "demo_share": 0.25, "bands": "3,2,1", "limit": 0, "uri": "", "flag": False, "on": True,
        "mode": "a",
    }  # fmt: skip
    d = Demo.from_pipeline(chip=32, demo_share=0.5, bands="4,5", limit=0, uri="gs://b/x")
    assert (d.chip, d.share, d.bands, d.limit, d.uri) == (32, 0.5, (4, 5), None, "gs://b/x")
    assert Demo.from_pipeline(**d.to_pipeline()) == d
    assert Demo.from_pipeline(local_only=3).local_only == 3  # a field name passes as it is
    with pytest.raises(TypeError, match="no pipeline parameter or field 'nope'"):
        Demo.from_pipeline(nope=1)
    with pytest.raises(CrownsamError, match="--share must be in"):
        Demo.from_pipeline(demo_share=2.0)


def test_renamed_options_are_named_as_typed_in_errors() -> None:
    """An option renamed with ``flags`` (as evaluate-model's ``--refine-t1``) is named by that flag when its
    value is refused; without the rename the field's own flag is named."""
    p = OneLineParser(prog="crownsam demo")
    add_options(p, Demo, prefix="x_", flags={"chip": "--demo-chip"})
    args = p.parse_args(["--demo-chip", "8"])
    with pytest.raises(CrownsamError, match=r"^--demo-chip must be"):
        Demo.from_args(args, prefix="x_", flags={"chip": "--demo-chip"})
    with pytest.raises(CrownsamError, match=r"^--chip must be"):
        Demo.from_args(args, prefix="x_")
