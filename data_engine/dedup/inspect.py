"""Sampled duplicate clusters, side by side, for a person to eyeball after a dedup run.

For each dedup stage that records `dup_of` (url, exact, near) a fixed sample of clusters — the same
on every run of the same data: clusters ordered by a hash of their id — with the survivor's and the
removed documents' text, from the exact input version the run read. Written as an HTML page that
the dedup job logs to MLflow (`clusters.html`).
"""

from __future__ import annotations

import html
from typing import Any

from data_engine import lake
from data_engine.tables import DROPS


def cluster_samples(spark: Any, lake_dir: str, input_table: str, input_version: int, drops_version: int,
                    *, clusters_per_stage: int = 10, members: int = 4, chars: int = 600) -> list[dict[str, Any]]:
    """[{stage, cluster_id, survivor: {doc_id, text}, removed: [{doc_id, text}, ...]}, ...]

    The samples are bounded aggregates (`min_by(…, k)`: the k smallest per group, combined on the
    map side), not windows: a stage or a cluster of a million documents is never one task's sort.
    """
    from pyspark.sql import functions as F

    drops = (lake.read_table(spark, lake_dir, DROPS, version=drops_version).df
             .where(F.col("dup_of").isNotNull() & F.col("stage").isin("url", "exact", "near")))
    clusters = drops.select("stage", "cluster_id", "dup_of").distinct()
    picked = (clusters.groupBy("stage")
              .agg(F.min_by(F.struct("cluster_id", "dup_of"), F.struct(F.xxhash64("cluster_id"), "cluster_id"),
                            clusters_per_stage).alias("_picked"))
              .select("stage", F.explode("_picked").alias("_c"))
              .select("stage", "_c.cluster_id", "_c.dup_of").collect())
    if not picked:
        return []
    keys = spark.createDataFrame([(r.stage, r.cluster_id) for r in picked], "stage string, cluster_id string")
    removed = (drops.join(F.broadcast(keys), ["stage", "cluster_id"])
               .groupBy("stage", "cluster_id").agg(F.min_by("doc_id", "doc_id", members).alias("_docs"))
               .collect())
    by_cluster = {(r.stage, r.cluster_id): sorted(r._docs) for r in removed}
    wanted = sorted({d for docs in by_cluster.values() for d in docs} | {r.dup_of for r in picked})
    source = lake.read_table(spark, lake_dir, input_table, version=input_version).df
    ids = spark.createDataFrame([(d,) for d in wanted], "doc_id string")
    texts = {r.doc_id: r.text for r in source.join(F.broadcast(ids), "doc_id")
             .select("doc_id", F.substring("text", 1, chars).alias("text")).collect()}
    out = []
    for r in sorted(picked, key=lambda r: (r.stage, r.cluster_id)):
        out.append({"stage": r.stage, "cluster_id": r.cluster_id,
                    "survivor": {"doc_id": r.dup_of, "text": texts.get(r.dup_of, "")},
                    "removed": [{"doc_id": d, "text": texts.get(d, "")}
                                for d in by_cluster.get((r.stage, r.cluster_id), [])]})
    return out


def render_html(samples: list[dict[str, Any]]) -> str:
    def cell(doc: dict[str, Any]) -> str:
        return (f"<td><b>{html.escape(doc['doc_id'])}</b><pre>{html.escape(doc['text'])}</pre></td>")

    rows = []
    for s in samples:
        rows.append(f"<tr><th colspan='{1 + len(s['removed'])}'>{html.escape(s['stage'])} — cluster "
                    f"{html.escape(str(s['cluster_id']))}</th></tr>")
        rows.append("<tr>" + cell(s["survivor"]) + "".join(cell(d) for d in s["removed"]) + "</tr>")
    style = ("<style>td{vertical-align:top;max-width:40em}pre{white-space:pre-wrap;font-size:12px}"
             "th{text-align:left;background:#eee}</style>")
    head = "<p>First column: the survivor; the others: documents removed in its favour.</p>"
    return f"<html><head><meta charset='utf-8'>{style}</head><body>{head}<table>{''.join(rows)}</table></body></html>"
