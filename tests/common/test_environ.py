"""``env_var``: a variable set for a block, then put back as it was (set or unset)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from crownsam.common.environ import env_var


def test_a_variable_is_set_for_the_block_and_put_back(monkeypatch) -> None:
    monkeypatch.delenv("CROWNSAM_TEST_VAR", raising=False)
    with env_var("CROWNSAM_TEST_VAR", "inside"):
        assert os.environ["CROWNSAM_TEST_VAR"] == "inside"
        child = [sys.executable, "-c", "import os; print(os.environ['CROWNSAM_TEST_VAR'])"]
        assert subprocess.run(child, capture_output=True, text=True, check=True).stdout.strip() == "inside"
    assert "CROWNSAM_TEST_VAR" not in os.environ
    monkeypatch.setenv("CROWNSAM_TEST_VAR", "before")
    with pytest.raises(RuntimeError), env_var("CROWNSAM_TEST_VAR", "inside"):
        raise RuntimeError("the block fails")
    assert os.environ["CROWNSAM_TEST_VAR"] == "before"
