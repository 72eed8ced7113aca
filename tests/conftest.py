"""Suite-wide hygiene: tests that run KFP's local runner in-process must not change later tests' output."""

import builtins

import pytest

from crownsam.pipelines.local import kfp_local_hygiene

REAL_PRINT = builtins.print  # before any test ran KFP's local runner (module-scoped fixtures run first)


@pytest.fixture(autouse=True)
def _kfp_local_hygiene():
    """See ``kfp_local_hygiene``: restores ``builtins.print`` and the root logger after every test. A
    module-scoped fixture that ran a pipeline before this fixture saved ``print`` may have left KFP's
    indenting print in place, so the session's original ``print`` is put back too."""
    with kfp_local_hygiene():
        yield
    builtins.print = REAL_PRINT
