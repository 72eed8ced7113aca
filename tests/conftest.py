"""Suite-wide hygiene: tests that run KFP's local runner in-process must not change later tests' output."""

import pytest

from crownsam.pipelines.local import kfp_local_hygiene


@pytest.fixture(autouse=True)
def _kfp_local_hygiene():
    """See ``kfp_local_hygiene``: restores ``builtins.print`` and the root logger after every test."""
    with kfp_local_hygiene():
        yield
