"""The dedup stages by name, in the order `jobs/dedup.py --stages` accepts them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from data_engine.dedup.exact import dedup_exact


def _exact(df: Any, cfg: Any) -> Any:
    return dedup_exact(df, cfg.exact)


#: name → function(df, DedupConfig) -> StageResult. URL, near and line dedup slot in here.
STAGES: dict[str, Callable[[Any, Any], Any]] = {"exact": _exact}

#: Every dedup stage name, including ones not built yet: a dedup run owns all their drops.
ALL_DEDUP_STAGES: tuple[str, ...] = ("url", "exact", "near", "lines")
