"""The dedup stages by name, in the order `jobs/dedup.py --stages` accepts them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from data_engine.dedup.exact import dedup_exact
from data_engine.dedup.lines import dedup_lines
from data_engine.dedup.near import dedup_near
from data_engine.dedup.url import dedup_url

#: name → function(df, DedupConfig) -> StageResult, each reading its own section of the config.
STAGES: dict[str, Callable[[Any, Any], Any]] = {
    "url": lambda df, cfg: dedup_url(df, cfg.url),
    "exact": lambda df, cfg: dedup_exact(df, cfg.exact),
    "near": lambda df, cfg: dedup_near(df, cfg.near),
    "lines": lambda df, cfg: dedup_lines(df, cfg.lines),
}

#: Every dedup stage name, including ones not built yet: a dedup run owns all their drops.
ALL_DEDUP_STAGES: tuple[str, ...] = ("url", "exact", "near", "lines")
