"""Metrics as KFP's Metrics artifact and MLflow take them: finite numbers only."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def finite_metrics(values: Mapping[str, Any]) -> dict[str, float]:
    """The entries that are finite numbers (booleans, NaN, infinities and nested values left out)."""
    return {
        k: float(v)
        for k, v in values.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }
