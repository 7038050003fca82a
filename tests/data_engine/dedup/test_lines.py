"""Frequent-line removal: boilerplate lines go, content stays, short leftovers are dropped."""

from __future__ import annotations

from data_engine.dedup.config import LineDedupConfig
from data_engine.dedup.lines import dedup_lines

SCHEMA = "doc_id string, lang string, text string"
NAV = "Home | News | Contact"
THAI_FOOTER = "สงวนลิขสิทธิ์ © 2567 ข่าวไทย"
CHINESE_FOOTER = "版权所有，转载请注明出处"


def body(i: int, lang: str) -> str:
    return {"tha": f"บทความที่ {i} เล่าเรื่องฝนตกหนักในจังหวัดที่ {i} และผลกระทบต่อชาวบ้าน",
            "zho": f"第{i}篇文章讲述了第{i}个省份的大雨以及对村民生活的影响和政府的应对",
            "eng": f"Article {i} tells how heavy rain in province {i} changed life in the villages"}[lang]


def run(spark, rows, cfg=LineDedupConfig()):
    out = dedup_lines(spark.createDataFrame(rows, SCHEMA), cfg)
    kept = {r.doc_id: r.text for r in out.kept.collect()}
    dropped = {r.doc_id: (r.reason, r.stage) for r in out.dropped.collect()}
    extra = out.extra["line_drops"].collect()
    out.release()
    return kept, dropped, extra, out.metrics


def test_lines_in_more_than_k_documents_are_removed_everywhere(spark):
    rows = [(f"t{i}", "tha", f"{NAV}\n{body(i, 'tha')}\n\n{THAI_FOOTER}") for i in range(6)]
    rows += [(f"z{i}", "zho", f"{body(i, 'zho')}\n{CHINESE_FOOTER}") for i in range(6)]
    rows += [(f"e{i}", "eng", f"{NAV}\n{body(i, 'eng')}\nSeen in three docs only") for i in range(3)]
    kept, dropped, extra, metrics = run(spark, rows)
    assert dropped == {}
    assert kept["t0"] == f"{body(0, 'tha')}"  # nav and footer gone; the blank line only separated them
    assert kept["z5"] == body(5, "zho")
    assert kept["e1"] == f"{body(1, 'eng')}\nSeen in three docs only"  # 3 ≤ K: kept
    assert metrics["frequent_lines"] == 3  # NAV (9 docs), the Thai footer and the Chinese footer
    docs = {r.doc_id: r for r in extra if r.kind == "doc"}
    assert docs["t2"].lines_removed == 2 and docs["t2"].lines_before == 4
    assert docs["t2"].chars_removed == len(NAV) + len(THAI_FOOTER) + 3
    top = {(r.lang, r.line): (r.docs, r.rank) for r in extra if r.kind == "top_line"}
    assert {top[("tha", NAV)], top[("tha", THAI_FOOTER)]} == {(6, 1), (6, 2)}
    assert top[("zho", CHINESE_FOOTER)] == (6, 1) and top[("eng", NAV)] == (3, 1)


def test_documents_left_empty_or_short_are_dropped_with_a_reason(spark):
    rows = [(f"d{i}", "eng", f"{NAV}\nShared footer line") for i in range(6)]
    rows += [(f"s{i}", "eng", f"{NAV}\nShort {i}") for i in range(3)]
    rows += [("long", "eng", f"{NAV}\n{body(1, 'eng')}")]
    rows += [("thai-short", "tha", f"{NAV}\nข่าวสั้น"), ("thai-ok", "tha", f"{NAV}\nข่าวสั้นมากแต่พอ")]
    kept, dropped, _, _ = run(spark, rows, LineDedupConfig(min_units=12))
    assert set(kept) == {"long", "thai-ok"}  # 14 words; 16 Thai code points (12 needed)
    assert dropped["thai-short"] == ("too_short_after_line_removal", "lines")  # 8 characters
    assert dropped["d0"] == ("empty_after_line_removal", "lines")
    assert dropped["s1"] == ("too_short_after_line_removal", "lines")


def test_lines_are_counted_within_buckets(spark):
    rows = [(f"d{i}", "eng", f"{NAV}\n{body(i, 'eng')}") for i in range(8)]
    one_bucket, _, _, m1 = run(spark, rows, LineDedupConfig(max_docs=5))
    small_buckets, _, _, m2 = run(spark, rows, LineDedupConfig(max_docs=5, bucket_docs=2))
    assert m1["buckets"] == 1 and NAV not in one_bucket["d0"]
    assert m2["buckets"] == 4 and all(NAV in text for text in small_buckets.values())
