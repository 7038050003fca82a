"""Dedup stages: each a function `(DataFrame, config) -> StageResult`, chained by `run.dedup`."""
