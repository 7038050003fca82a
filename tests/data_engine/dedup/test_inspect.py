"""Sampled clusters for eyeballing: bounded per stage and per cluster, survivors and texts right."""

from __future__ import annotations

from data_engine import lake
from data_engine.dedup.config import DedupConfig
from data_engine.dedup.inspect import cluster_samples, render_html
from data_engine.dedup.run import dedup

SCHEMA = "doc_id string, lang string, text string"


def test_samples_are_bounded_and_name_each_cluster_survivor(spark, lake_dir):
    # 14 pages, each copied 2 + (k % 5) times: 14 exact clusters, the largest with 7 members.
    rows = []
    for k in range(14):
        page = f"หน้า {k} " + "ข้อความภาษาไทยที่ซ้ำกัน " * 3 + f"page {k} " * 5
        rows += [(f"p{k:02d}-{c}", "tha", page) for c in range(2 + k % 5)]
    rows += [("solo", "eng", "a page nobody copied")]
    lake.write_table(spark.createDataFrame(rows, SCHEMA), lake_dir, "docs_raw", mode="error")
    result = dedup(spark, lake_dir, DedupConfig(stages=("exact",)))
    samples = cluster_samples(spark, lake_dir, "docs_raw", 0, result.tables["drops"],
                              clusters_per_stage=10, members=3, chars=12)
    assert len(samples) == 10 and {s["stage"] for s in samples} == {"exact"}
    assert len({s["cluster_id"] for s in samples}) == 10
    for s in samples:
        page = s["survivor"]["doc_id"].split("-")[0]
        copies = 2 + int(page[1:]) % 5
        # the keep rule's survivor of equal texts is the smallest id; the removed are the others
        assert s["survivor"]["doc_id"] == f"{page}-0"
        assert [d["doc_id"] for d in s["removed"]] == [f"{page}-{c}" for c in range(1, min(copies, 4))]
        assert all(len(d["text"]) == 12 and d["text"] == s["survivor"]["text"] for d in s["removed"])
    again = cluster_samples(spark, lake_dir, "docs_raw", 0, result.tables["drops"],
                            clusters_per_stage=10, members=3, chars=12)
    assert again == samples  # the same sample on every run
    assert "p" in render_html(samples) and "<table>" in render_html(samples)
