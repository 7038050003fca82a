"""Python batches bounded by characters: slices cover every row once, in order, within budget."""

from __future__ import annotations

import pandas as pd
import pytest

from data_engine.batches import CONF_KEY, batch_chars, chunks, rebatch


def test_chunks_cover_every_row_in_order_within_the_budget():
    texts = ["a" * n for n in (5, 5, 5, 30, 1, 1, 1, 1, 9, 0)] + [None]
    pdf = pd.DataFrame({"text": texts, "i": range(len(texts))})
    pieces = list(chunks(pdf, 10))
    assert [list(p["i"]) for p in pieces] == [[0, 1], [2], [3], [4, 5, 6, 7], [8, 9, 10]]
    for piece in pieces:  # only a row longer than the budget stands alone above it
        assert piece["text"].str.len().fillna(0).sum() <= 10 or len(piece) == 1
    assert list(chunks(pdf, 10_000))[0] is pdf  # within budget: the batch itself, no copy


def test_rebatch_sums_several_columns_and_skips_empty_batches():
    pdf = pd.DataFrame({"text_a": ["xxxx"] * 4, "text_b": ["yyyy"] * 4})
    out = list(rebatch(iter([pdf.iloc[:0], pdf]), 16, ("text_a", "text_b")))
    assert [len(p) for p in out] == [2, 2]


def test_the_budget_comes_from_the_spark_conf(spark):
    assert batch_chars(spark) > 0
    spark.conf.set(CONF_KEY, "0")
    try:
        with pytest.raises(ValueError, match=CONF_KEY):
            batch_chars(spark)
    finally:
        spark.conf.unset(CONF_KEY)
