"""KFP's local runner can leave ``builtins.print`` swapped; ``kfp_local_hygiene`` must undo that."""

import builtins
import logging
import sys

from kfp.local import logging_utils

from crownsam.pipelines.local import kfp_local_hygiene


def test_a_leaked_indenting_print_and_logger_are_restored(capsys) -> None:
    real = builtins.print
    root = logging.getLogger()
    level, handlers = root.level, root.handlers[:]
    with kfp_local_hygiene():
        # what an interleaved restore of two parallel tasks leaves behind: KFP's indenting print
        leaked = logging_utils.indented_print()  # kept alive: closing it would restore print itself
        leaked.__enter__()
        root.addHandler(logging.NullHandler())
        root.setLevel(logging.DEBUG)
        print("x", file=sys.stderr)
    assert capsys.readouterr().out == "    "  # the leak this guards against
    assert builtins.print is real and root.level == level and root.handlers == handlers
    print("y", file=sys.stderr)
    assert capsys.readouterr().out == ""
    del leaked
