"""The ``crownsam`` command: one subcommand per pipeline step. Errors print one line and exit 2."""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Sequence

from crownsam.common.cli_util import OneLineParser
from crownsam.common.errors import CrownsamError

# Each module has ``add_parser(subparsers)``; the order here is the order in ``crownsam --help``.
STEP_CLIS = (
    "crownsam.synthetic.cli",
    "crownsam.chm.cli",
    "crownsam.tiling.cli",
    "crownsam.pseudolabel.cli",
    "crownsam.everything.cli",
    "crownsam.evaluation.cli",
    "crownsam.coco.cli",
    "crownsam.training.cli",
    "crownsam.comparison.cli",
    "crownsam.flights.cli",
    "crownsam.pipelines.cli",
)


def build_parser() -> OneLineParser:
    from crownsam import __version__

    p = OneLineParser(prog="crownsam", description=__doc__)
    p.add_argument("--version", action="version", version=f"crownsam {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in STEP_CLIS:
        importlib.import_module(name).add_parser(sub)
    return p


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each record."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def setup_logging(verbose: bool) -> None:
    """Our messages (``crownsam.*`` loggers) go to stderr, one line each; other libraries stay quiet."""
    log = logging.getLogger("crownsam")
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("crownsam: %(levelname)s: %(message)s"))
        log.addHandler(handler)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        return args.func(args)
    except CrownsamError as exc:
        print(f"crownsam: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("crownsam: interrupted; no output was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
