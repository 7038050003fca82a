"""Exact dedup: documents whose normalised texts are identical keep one survivor."""

from __future__ import annotations

from typing import Any

from data_engine.dedup.base import StageResult, keep_rank, tag_duplicates
from data_engine.dedup.config import ExactDedupConfig
from data_engine.dedup.normalize import text_hash_column

STAGE = "exact"
REASON = "exact_duplicate"


def dedup_exact(df: Any, cfg: ExactDedupConfig = ExactDedupConfig()) -> StageResult:
    """Group by the hash of the normalised text (`normalize.normalize_text`); `cluster_id` in
    drops is that hash, so `drops` rows of one group share it with their survivor's `dup_of`."""
    keys = df.select("doc_id", "lang", text_hash_column(df["text"], lowercase=cfg.lowercase).alias("_key"),
                     keep_rank(df).alias("_rank"))
    return tag_duplicates(df, keys, stage=STAGE, reason=REASON)
