"""Shared by the benchmark scripts: print figures as an aligned table, optionally save them as JSON."""

from __future__ import annotations

import json
from pathlib import Path


def report(figures: dict, json_path: str | None = None) -> None:
    """One ``name  value`` line per figure; the same dict as JSON when ``json_path`` is given."""
    width = max(map(len, figures))
    for k, v in figures.items():
        print(f"{k:<{width}}  {v}")
    if json_path:
        Path(json_path).write_text(json.dumps(figures, indent=2) + "\n")
