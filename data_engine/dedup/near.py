"""MinHash near-duplicate dedup: shingles → signatures → LSH candidates → verified edges →
connected components → one survivor per component.

What makes it different from the usual MinHash script (notes/anchors-curation.md):
- script-aware shingles (`shingles.py`): Thai or Chinese near-duplicates are found, different
  Thai documents are not merged;
- every candidate pair is verified — exact Jaccard of the two shingle sets by default — so LSH's
  false positives (and whole templated sites) never become edges;
- buckets larger than `max_bucket_size` are linked to their smallest member instead of all pairs,
  so one bucket never becomes a quadratic task;
- components are computed in Spark (`components.py`), survivors by the documented keep rule —
  the same documents on every run.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from data_engine.dedup.base import StageResult, keep_order, tag_duplicates
from data_engine.dedup.components import connected_components
from data_engine.dedup.config import NearDedupConfig
from data_engine.dedup.minhash import MinHasher, s_curve
from data_engine.dedup.shingles import ShingleSpec

STAGE = "near"
REASON = "near_duplicate"
SCURVE_POINTS = (0.5, 0.7, 0.8, 0.9)


def spec_of(cfg: NearDedupConfig) -> ShingleSpec:
    return ShingleSpec(word_ngram=cfg.word_ngram, char_ngram=cfg.char_ngram,
                       char_ngram_by_script=tuple(sorted(cfg.char_ngram_by_script.items())))


def scurve(cfg: NearDedupConfig) -> dict[str, float]:
    """Candidate probability at the usual Jaccard points for the configured bands × rows."""
    return {f"{s:.1f}": round(s_curve(s, cfg.bands, cfg.rows), 4) for s in SCURVE_POINTS}


def _signature_partitions(cfg: NearDedupConfig, keep_signature: bool) -> Any:
    spec, hasher = spec_of(cfg), MinHasher(cfg.bands, cfg.rows, cfg.seed)

    def signatures(batches: Iterator[Any]) -> Iterator[Any]:
        import pandas as pd

        from data_engine.dedup.shingles import shingle_hashes

        for pdf in batches:
            if pdf.empty:
                continue
            hashes, doc = shingle_hashes(pdf["text"].tolist(), pdf["lang"].tolist(), spec)
            sig = hasher.signatures(hashes, doc, len(pdf))
            out = pd.DataFrame({"doc_id": pdf["doc_id"].to_numpy(),
                                "bands": list(hasher.band_keys(sig))})
            if keep_signature:
                out["sig"] = list(sig.astype("int64"))
            yield out

    return signatures


def _jaccard_partitions(cfg: NearDedupConfig) -> Any:
    spec = spec_of(cfg)

    def verify(batches: Iterator[Any]) -> Iterator[Any]:
        import pandas as pd

        from data_engine.dedup.shingles import jaccard, shingle_sets

        for pdf in batches:
            if pdf.empty:
                continue
            n = len(pdf)
            sets = shingle_sets(pdf["text_a"].tolist() + pdf["text_b"].tolist(),
                                pdf["lang_a"].tolist() + pdf["lang_b"].tolist(), spec)
            yield pd.DataFrame({"a": pdf["a"].to_numpy(), "b": pdf["b"].to_numpy(),
                                "jaccard": [jaccard(sets[i], sets[n + i]) for i in range(n)]})

    return verify


@dataclass
class NearStats:
    candidates: int = 0
    edges: int = 0
    rounds: int = 0
    largest_bucket: int = 0


def candidate_pairs(signed: Any, max_bucket_size: int) -> tuple[Any, int]:
    """(a, b) pairs with a < b sharing at least one LSH band key, and the largest bucket size.

    Bucket sizes come first (a count, pre-aggregated on the map side). Buckets up to
    `max_bucket_size` collect their members and give all pairs; a larger bucket only links each
    member to its smallest doc_id — a star keeps it connected with a linear number of pairs, and no
    task ever holds a giant bucket's member list.
    """
    from pyspark.sql import functions as F

    buckets = signed.select("doc_id", F.posexplode("bands").alias("band", "key"))
    sizes = (buckets.groupBy("band", "key")
             .agg(F.count(F.lit(1)).alias("size"), F.min("doc_id").alias("leader"))
             .where(F.col("size") > 1))
    largest = sizes.agg(F.max("size")).collect()[0][0] or 0
    members = buckets.join(sizes, ["band", "key"])
    all_pairs = F.expr("flatten(transform(docs, (x, i) -> "
                       "transform(slice(docs, i + 2, size(docs)), y -> named_struct('a', x, 'b', y))))")
    pairs_small = (members.where(F.col("size") <= max_bucket_size)
                   .groupBy("band", "key").agg(F.sort_array(F.collect_list("doc_id")).alias("docs"))
                   .select(F.explode(all_pairs).alias("p")).select("p.a", "p.b"))
    pairs_big = (members.where((F.col("size") > max_bucket_size) & (F.col("doc_id") != F.col("leader")))
                 .select(F.col("leader").alias("a"), F.col("doc_id").alias("b")))
    return pairs_small.unionByName(pairs_big).distinct(), int(largest)


def dedup_near(df: Any, cfg: NearDedupConfig = NearDedupConfig()) -> StageResult:
    """Remove near duplicates; `cluster_id` in drops is the component id (its smallest doc_id)."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    exact_check = cfg.verify == "exact"
    sig_schema = "doc_id string, bands array<bigint>" + ("" if exact_check else ", sig array<bigint>")
    signed = (df.select("doc_id", "lang", "text")
              .mapInPandas(_signature_partitions(cfg, keep_signature=not exact_check), sig_schema)
              .persist(StorageLevel.MEMORY_AND_DISK))
    stats = NearStats()
    try:
        pairs, stats.largest_bucket = candidate_pairs(signed, cfg.max_bucket_size)
        pairs = pairs.persist(StorageLevel.MEMORY_AND_DISK)
        stats.candidates = pairs.count()
        if exact_check:
            docs = df.select("doc_id", "lang", "text")
            scored = (pairs.join(docs.select(F.col("doc_id").alias("a"), F.col("lang").alias("lang_a"),
                                             F.col("text").alias("text_a")), "a")
                      .join(docs.select(F.col("doc_id").alias("b"), F.col("lang").alias("lang_b"),
                                        F.col("text").alias("text_b")), "b")
                      .mapInPandas(_jaccard_partitions(cfg), "a string, b string, jaccard double"))
        else:
            same = F.expr(f"size(filter(zip_with(sig_a, sig_b, (x, y) -> x = y), e -> e)) / {cfg.bands * cfg.rows}")
            scored = (pairs.join(signed.select(F.col("doc_id").alias("a"), F.col("sig").alias("sig_a")), "a")
                      .join(signed.select(F.col("doc_id").alias("b"), F.col("sig").alias("sig_b")), "b")
                      .select("a", "b", same.alias("jaccard")))
        edges = (scored.where(F.col("jaccard") >= cfg.threshold)
                 .select(F.col("a").alias("u"), F.col("b").alias("v"))
                 .persist(StorageLevel.MEMORY_AND_DISK))
        stats.edges = edges.count()
        components = connected_components(edges)
        stats.rounds = components.rounds
        labelled = df.join(components.labels.select(F.col("node").alias("doc_id"),
                                                     F.col("component").alias("_component")),
                           "doc_id", "left")
        result = tag_duplicates(labelled, "_component", stage=STAGE, reason=REASON, order=keep_order(df))
        result.tagged.count()  # materialise before the intermediate frames go
        pairs.unpersist()
        edges.unpersist()
    finally:
        signed.unpersist()
    metrics = {"candidates": stats.candidates, "edges": stats.edges, "cc_rounds": stats.rounds,
               "largest_bucket": stats.largest_bucket,
               **{f"s_curve.{k}": v for k, v in scurve(cfg).items()}}
    return StageResult(kept=result.kept, dropped=result.dropped, tagged=result.tagged, metrics=metrics)
