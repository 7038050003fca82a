"""The heuristic rules: each compares one statistic with one threshold of the document's language.

Rules are Spark Column expressions over the statistics (`stats.py`) and a broadcast table of
per-language thresholds; the first rule that fires names the drop reason (its name), and `detail`
says the value and the threshold. Order: cheap, decisive rules first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from data_engine.clean.config import CleanConfig, RuleThresholds

#: (reason, statistic, comparison, threshold field); a rule fires when the comparison holds.
RULES: tuple[tuple[str, str, str, str], ...] = (
    ("too_short", "units", "<", "min_units"),
    ("too_long", "units", ">", "max_units"),
    ("lorem_ipsum", "lorem_ipsum", ">", "_lorem"),
    ("short_lines", "mean_line_chars", "<", "min_mean_line_chars"),
    ("few_punctuated_lines", "line_punct_frac", "<", "min_line_punct_frac"),
    ("symbols", "symbol_ratio", ">", "max_symbol_ratio"),
    ("digits", "digit_ratio", ">", "max_digit_ratio"),
    ("non_letters", "letter_frac", "<", "min_letter_frac"),
    ("urls", "url_ratio", ">", "max_url_ratio"),
    ("duplicate_lines", "dup_line_frac", ">", "max_dup_line_frac"),
    ("duplicate_line_chars", "dup_line_char_frac", ">", "max_dup_line_char_frac"),
    ("top_2gram", "top_2gram_frac", ">", "max_top_2gram_frac"),
    ("duplicate_5grams", "dup_5gram_frac", ">", "max_dup_5gram_frac"),
    ("duplicate_phrases", "dup_phrase_frac", ">", "max_dup_phrase_frac"),
    ("curly_brackets", "curly_ratio", ">", "max_curly_ratio"),
    ("code_like", "code_line_frac", ">", "max_code_line_frac"),
    ("bullet_lines", "bullet_line_frac", ">", "max_bullet_line_frac"),
)
THRESHOLD_FIELDS = [f.name for f in dataclasses.fields(RuleThresholds) if f.name != "drop_lorem_ipsum"]


def thresholds_frame(spark: Any, cfg: CleanConfig, langs: Iterable[str]) -> Any:
    """One row per language (`_thr_lang`), plus `*` for languages without a section."""
    rows = []
    for lang in [*sorted(set(langs)), "*"]:
        t = cfg.thresholds(lang if lang != "*" else "default")
        # drop_lorem_ipsum is a switch; as a threshold: fire when lorem_ipsum (0/1) > 0.5, or never (> 1)
        rows.append((lang, *[float(getattr(t, f)) for f in THRESHOLD_FIELDS], 0.5 if t.drop_lorem_ipsum else 1.0))
    schema = ", ".join(["_thr_lang string", *[f"{f} double" for f in THRESHOLD_FIELDS], "_lorem double"])
    return spark.createDataFrame(rows, schema)


def with_thresholds(df: Any, thresholds: Any) -> Any:
    """Attach each document's thresholds: its language's row, else the `*` row."""
    from pyspark.sql import functions as F

    fields = [*THRESHOLD_FIELDS, "_lorem"]
    own = F.broadcast(thresholds.where(F.col("_thr_lang") != "*"))
    default = F.broadcast(thresholds.where(F.col("_thr_lang") == "*")
                          .select(*[F.col(f).alias(f"_def_{f}") for f in fields]))
    joined = df.join(own, df["lang"] == own["_thr_lang"], "left").crossJoin(default)
    return joined.select(*df.columns, *[F.coalesce(F.col(f), F.col(f"_def_{f}")).alias(f"_t_{f}") for f in fields])


def first_failure() -> tuple[Any, Any]:
    """(reason, detail) columns: the first rule that fires, or nulls."""
    from pyspark.sql import functions as F

    reason = F.lit(None).cast("string")
    detail = F.lit(None).cast("string")
    for name, stat, op, threshold in reversed(RULES):
        value, limit = F.col(f"_s_{stat}"), F.col(f"_t_{threshold}")
        fires = value < limit if op == "<" else value > limit
        reason = F.when(fires, F.lit(name)).otherwise(reason)
        text = F.concat(F.lit(f"{stat}="), F.round(value, 4).cast("string"), F.lit(f" {op} "),
                        F.round(limit, 4).cast("string"))
        detail = F.when(fires, text).otherwise(detail)
    return reason, detail
