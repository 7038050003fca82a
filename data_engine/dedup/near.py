"""MinHash near-duplicate dedup: shingles → signatures → LSH candidates → verified edges →
clusters around centres → one survivor per cluster.

What makes it different from the usual MinHash script (notes/anchors-curation.md):
- script-aware shingles (`shingles.py`): Thai or Chinese near-duplicates are found, different
  Thai documents are not merged;
- every candidate pair is verified — exact Jaccard of the two shingle sets by default — so LSH's
  false positives (and whole templated sites) never become edges;
- an LSH bucket larger than `max_bucket_size` is split by the keys of further bands (its members
  must then agree on two bands, then three …), so one bucket never becomes a quadratic task and
  its near-duplicate pairs are still found; only members identical on every band left are linked
  to one member;
- clusters are a centre and the documents verified near it (`clusters.py`), not connected
  components, so chains of edits do not merge documents that are far apart; the centre is the
  survivor by the documented keep rule — the same documents on every run.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from data_engine.batches import batch_chars, rebatch
from data_engine.dedup.base import StageResult, keep_rank, keep_rank_fields, tag_losers
from data_engine.dedup.clusters import centre_clusters, centre_clusters_local
from data_engine.dedup.config import NearDedupConfig
from data_engine.dedup.minhash import MinHasher, s_curve
from data_engine.dedup.shingles import ShingleSpec
from data_engine.spark import phase

STAGE = "near"
REASON = "near_duplicate"
SCURVE_POINTS = (0.5, 0.7, 0.8, 0.9)


def spec_of(cfg: NearDedupConfig) -> ShingleSpec:
    return ShingleSpec(word_ngram=cfg.word_ngram, char_ngram=cfg.char_ngram,
                       char_ngram_by_script=tuple(sorted(cfg.char_ngram_by_script.items())))


def scurve(cfg: NearDedupConfig) -> dict[str, float]:
    """Candidate probability at the usual Jaccard points for the configured bands × rows."""
    return {f"{s:.1f}": round(s_curve(s, cfg.bands, cfg.rows), 4) for s in SCURVE_POINTS}


def _signature_partitions(cfg: NearDedupConfig, keep_signature: bool, max_chars: int) -> Any:
    spec, hasher = spec_of(cfg), MinHasher(cfg.bands, cfg.rows, cfg.seed, cfg.sketch)

    def signatures(batches: Iterator[Any]) -> Iterator[Any]:
        import pandas as pd

        from data_engine.dedup.shingles import shingle_hashes

        for pdf in rebatch(batches, max_chars):
            if pdf.empty:
                continue
            hashes, doc = shingle_hashes(pdf["text"].tolist(), pdf["lang"].tolist(), spec)
            sig = hasher.signatures(hashes, doc, len(pdf))
            out = pd.DataFrame({"doc_id": pdf["doc_id"].to_numpy(), "lang": pdf["lang"].to_numpy(),
                                "bands": list(hasher.band_keys(sig))})
            for name in pdf.columns:
                if name.startswith("_k_"):  # the keep rule's fields, handed on
                    out[name] = pdf[name].to_numpy()
            if keep_signature:
                out["sig"] = list(sig.astype("int64"))
            yield out

    return signatures


def _set_partitions(cfg: NearDedupConfig, max_chars: int) -> Any:
    spec = spec_of(cfg)

    def shingle_set(batches: Iterator[Any]) -> Iterator[Any]:
        import numpy as np
        import pandas as pd

        from data_engine.dedup.shingles import shingle_sets

        for pdf in rebatch(batches, max_chars):
            if pdf.empty:
                continue
            sets = shingle_sets(pdf["text"].tolist(), pdf["lang"].tolist(), spec)
            # 32 bits of each hash: half the bytes to shuffle, and a collision inside one page's set
            # (~n²/2³³: 4·10⁻⁵ for 600 shingles) moves its Jaccard by 1/n at most
            yield pd.DataFrame({"doc_id": pdf["doc_id"].to_numpy(),
                                "shingles": [np.unique(s.astype(np.uint32)).view(np.int32) for s in sets]})

    return shingle_set


#: Candidate documents (or shared LSH buckets) up to this many are broadcast to the filter that
#: picks their text (or band keys): the table is read in place, not shuffled to meet them.
BROADCAST_CANDIDATES = 500_000


def exact_jaccard(df: Any, pairs: Any, cfg: NearDedupConfig, max_chars: int) -> tuple[Any, Any]:
    """(a, b, jaccard) of every candidate pair from the two documents' shingle sets.

    Each candidate document is shingled once (not once per pair it is in) and only its set of
    hashes — not its text — meets the pairs; the intersection is a compiled merge of the two
    sorted sets (`jaccard_kernel`), a third faster than Spark's `array_intersect`.
    Returns the scored pairs and the persisted sets (freed by the caller).
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    ends = (pairs.select(F.col("a").alias("doc_id")).unionByName(pairs.select(F.col("b").alias("doc_id")))
            .distinct().persist(StorageLevel.MEMORY_AND_DISK))
    wanted = F.broadcast(ends) if ends.count() <= BROADCAST_CANDIDATES else ends
    sets = (df.select("doc_id", "lang", "text").join(wanted, "doc_id", "left_semi")
            .mapInPandas(_set_partitions(cfg, max_chars), "doc_id string, shingles array<int>")
            .persist(StorageLevel.MEMORY_AND_DISK))
    sets.count()
    ends.unpersist()
    scored = (pairs.join(sets.select(F.col("doc_id").alias("a"), F.col("shingles").alias("sa")), "a")
              .join(sets.select(F.col("doc_id").alias("b"), F.col("shingles").alias("sb")), "b")
              .select("a", "b", "sa", "sb")
              .mapInArrow(_score_pairs, "a string, b string, jaccard double"))
    return scored, sets


def _score_pairs(batches: Iterator[Any]) -> Iterator[Any]:
    """(a, b, sa, sb) batches → (a, b, jaccard): the sets' flat values and offsets go to the
    compiled merge as they lie in Arrow, no per-pair Python."""
    import numpy as np
    import pyarrow as pa

    from data_engine.dedup.jaccard_kernel import pair_jaccard

    def flat(column: Any) -> tuple[Any, Any]:
        # The sets were sorted as uint32 (`_set_partitions`) and travel as int32: compare them as
        # they were sorted. Offsets index into `values` (a sliced batch keeps its parent's values).
        return (column.values.to_numpy(zero_copy_only=False).view(np.uint32),
                column.offsets.to_numpy().astype(np.int64, copy=False))

    for batch in batches:
        jaccard = pair_jaccard(*flat(batch.column("sa")), *flat(batch.column("sb")))
        yield pa.RecordBatch.from_arrays([batch.column("a"), batch.column("b"), pa.array(jaccard, pa.float64())],
                                         names=["a", "b", "jaccard"])


@dataclass
class NearStats:
    candidates: int = 0
    edges: int = 0
    rounds: int = 0
    largest_bucket: int = 0
    split_levels: int = 0
    clusters: int = 0


#: How many further bands an oversized bucket is split by before its members are starred.
MAX_SPLIT_LEVELS = 4


def _all_pairs(members: Any) -> Any:
    """Every (a, b), a < b, within each (band, key) bucket of `members` (doc_id, band, key)."""
    from pyspark.sql import functions as F

    all_pairs = F.expr("flatten(transform(docs, (x, i) -> "
                       "transform(slice(docs, i + 2, size(docs)), y -> named_struct('a', x, 'b', y))))")
    return (members.groupBy("band", "key").agg(F.sort_array(F.collect_list("doc_id")).alias("docs"))
            .select(F.explode(all_pairs).alias("p")).select("p.a", "p.b"))


def candidate_pairs(signed: Any, bands: int, max_bucket_size: int) -> tuple[Any, int, int]:
    """(a, b) pairs with a < b sharing at least one LSH band key; the largest bucket's size; and
    how many split levels oversized buckets needed.

    Bucket sizes come first (a count, pre-aggregated on the map side). Buckets up to
    `max_bucket_size` give all their pairs. A larger bucket's members are re-keyed by the key of
    the next band as well and counted again, up to `MAX_SPLIT_LEVELS` times: each level keeps the
    pairs that also agree on one more band (pairs at the threshold share most bands: 0.8^6 ≈ 0.26
    per band), and no task ever holds a giant bucket's member list. What is still oversized after
    that agrees on five bands; it is linked to its smallest doc_id.
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    buckets = signed.select("doc_id", F.posexplode("bands").alias("band", "key"))
    # Checkpointed, not persisted: a broadcast of a persisted aggregate re-ran its whole shuffle
    # (seen in the event log: 2M band keys shuffled twice at 100k documents).
    sizes = (buckets.groupBy("band", "key").agg(F.count(F.lit(1)).alias("size"))
             .where(F.col("size") > 1).localCheckpoint(eager=True))
    largest, shared = sizes.agg(F.max("size"), F.count(F.lit(1))).collect()[0]
    largest = int(largest or 0)
    # Buckets shared by two or more documents are few (near-duplicates and templates): broadcast,
    # every document's band keys are matched where they lie instead of being shuffled to meet them.
    members = buckets.join(F.broadcast(sizes) if shared <= BROADCAST_CANDIDATES else sizes, ["band", "key"])
    pairs = _all_pairs(members.where(F.col("size") <= max_bucket_size).select("doc_id", "band", "key"))
    levels = 0
    if largest > max_bucket_size:
        big = (members.where(F.col("size") > max_bucket_size).select("doc_id", "band", "key")
               .join(signed.select("doc_id", "bands"), "doc_id"))
        while levels < MAX_SPLIT_LEVELS:
            levels += 1
            nxt = F.element_at("bands", F.pmod(F.col("band") + levels, F.lit(bands)).cast("int") + 1)
            big = big.withColumn("key", F.xxhash64("key", nxt)).persist(StorageLevel.MEMORY_AND_DISK)
            sub = (big.groupBy("band", "key").agg(F.count(F.lit(1)).alias("size"))
                   .where(F.col("size") > 1))
            split = big.join(sub, ["band", "key"])
            pairs = pairs.unionByName(_all_pairs(split.where(F.col("size") <= max_bucket_size)
                                                 .select("doc_id", "band", "key")))
            still = split.where(F.col("size") > max_bucket_size).drop("size").persist(StorageLevel.MEMORY_AND_DISK)
            big.unpersist()
            big = still
            if not big.take(1):
                break
        leaders = big.groupBy("band", "key").agg(F.min("doc_id").alias("leader"))
        pairs = pairs.unionByName(big.join(leaders, ["band", "key"]).where(F.col("doc_id") != F.col("leader"))
                                  .select(F.col("leader").alias("a"), F.col("doc_id").alias("b")))
    return pairs.distinct(), largest, levels


def dedup_near(df: Any, cfg: NearDedupConfig = NearDedupConfig()) -> StageResult:
    """Remove near duplicates; `cluster_id` and `dup_of` in drops are the cluster's centre."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    max_chars = batch_chars(df.sparkSession)
    exact_check = cfg.verify == "exact"
    rank_fields = keep_rank_fields(df)
    sig_schema = ("doc_id string, lang string, bands array<bigint>" + ("" if exact_check else ", sig array<bigint>")
                  + "".join(f", _k_{name} {kind}" for name, _, kind in rank_fields))
    signed = (df.select("doc_id", "lang", "text", *[column.alias(f"_k_{name}") for name, column, _ in rank_fields])
              .mapInPandas(_signature_partitions(cfg, keep_signature=not exact_check, max_chars=max_chars),
                           sig_schema)
              .persist(StorageLevel.MEMORY_AND_DISK))
    stats = NearStats()
    cached: list[Any] = []
    spark = df.sparkSession
    try:
        with phase(spark, "near: shingles + signatures"):
            signed.count()
        with phase(spark, "near: LSH candidates"):
            pairs, stats.largest_bucket, stats.split_levels = candidate_pairs(signed, cfg.bands, cfg.max_bucket_size)
            # Checkpointed, not persisted: every later frame (sets, scores, edges, clusters) is built
            # on the pairs, and a cached frame's plan is printed inside each plan that reads it, its
            # initial and final versions both: nested caches made plans of a megabyte.
            pairs = pairs.localCheckpoint(eager=True)
            stats.candidates = pairs.count()
        with phase(spark, "near: verification"):
            if exact_check:
                scored, sets = exact_jaccard(df, pairs, cfg, max_chars)
            else:
                sets = None
                same = F.expr(f"size(filter(zip_with(sig_a, sig_b, (x, y) -> x = y), e -> e)) / {cfg.bands * cfg.rows}")
                scored = (pairs.join(signed.select(F.col("doc_id").alias("a"), F.col("sig").alias("sig_a")), "a")
                          .join(signed.select(F.col("doc_id").alias("b"), F.col("sig").alias("sig_b")), "b")
                          .select("a", "b", same.alias("jaccard")))
            edges = (scored.where(F.col("jaccard") >= cfg.threshold)
                     .select(F.col("a").alias("u"), F.col("b").alias("v"))
                     .persist(StorageLevel.MEMORY_AND_DISK))
            stats.edges = edges.count()
        if sets is not None:
            sets.unpersist()
        with phase(spark, "near: clusters"):
            ranks = signed.select("doc_id", "lang", keep_rank(df, [(name, F.col(f"_k_{name}"), kind)
                                                           for name, _, kind in rank_fields]).alias("_rank"))
            if stats.edges <= cfg.driver_graph_edges:
                clusters = centre_clusters_local(edges, ranks)
            else:
                clusters = centre_clusters(edges, ranks)
        cached += clusters.cached
        stats.rounds, stats.clusters = clusters.rounds, clusters.clusters
        with phase(spark, "near: survivors"):
            result = tag_losers(df, clusters.losers, stage=STAGE, reason=REASON)
        cached += result.cached
        edges.unpersist()  # the losers are materialised (counted, or local data)
    finally:
        signed.unpersist()
    metrics = {"candidates": stats.candidates, "edges": stats.edges, "cluster_rounds": stats.rounds,
               "clusters": stats.clusters, "largest_bucket": stats.largest_bucket,
               "bucket_split_levels": stats.split_levels,
               **{f"s_curve.{k}": v for k, v in scurve(cfg).items()}}
    return StageResult(kept=result.kept, dropped=result.dropped, tagged=result.tagged, metrics=metrics,
                       cached=cached, removed=result.removed)
