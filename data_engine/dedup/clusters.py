"""Near-duplicate clusters around centres, not connected components.

Components chain: A≈B and B≈C put A and C in one cluster even when A and C share little, and a
long chain of edited copies becomes one cluster whose members are far apart. Here a cluster is a
star — a centre and the documents verified near the centre itself:

    visiting documents by most verified neighbours first (ties by the keep rule), every document
    not yet claimed becomes a centre and claims every unclaimed document it has an edge to.

The centre of a planted cluster is its original: near every edited copy, so it has the most
edges, while two copies edited in different places may not be near each other. Every member is
within the threshold of its centre, so a cluster's diameter is bounded (Jaccard distance at most
twice the threshold's), where a component's is not. Which member survives is the keep rule's
choice among the cluster (best quality, longest text, smallest id), not the centre.

Two implementations give the same clusters:
- `centre_clusters_local`: the greedy loop over the verified graph on the driver, for graphs up to
  `NearDedupConfig.driver_graph_edges` edges (a bounded, configured size: Spark's per-job overhead
  is most of the cost of a distributed pass over a small graph);
- `centre_clusters`: rounds in Spark. In each round every connected component of the unresolved
  graph takes its first document in visiting order as centre, the centre claims its neighbours,
  and what is left of the component goes to the next round. Components are disconnected, so their
  centres never compete, and within a component the first unresolved document is exactly the next
  centre the loop would pick: the rounds reproduce the loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from data_engine.dedup.components import connected_components
from data_engine.spark import local_frame


@dataclass(frozen=True)
class Clusters:
    losers: Any  # DataFrame (doc_id, lang, _dup_of, _cluster): each removed document and its centre
    rounds: int
    clusters: int
    cached: tuple[Any, ...] = ()  # persisted frames behind `losers`, freed by the stage's release


def greedy_centres(order: np.ndarray, u: np.ndarray, v: np.ndarray, n: int) -> np.ndarray:
    """For nodes 0..n-1 visited in `order`, the centre each node belongs to (its own index for a
    centre). `u`, `v` are the undirected edges."""
    src = np.concatenate([u, v])
    dst = np.concatenate([v, u])
    by_src = np.argsort(src, kind="stable")
    dst = dst[by_src]
    starts = np.searchsorted(src[by_src], np.arange(n + 1))
    centre = np.full(n, -1, dtype=np.int64)
    for node in order.tolist():
        if centre[node] >= 0:
            continue
        centre[node] = node
        neighbours = dst[starts[node]:starts[node + 1]]
        free = neighbours[centre[neighbours] < 0]
        centre[free] = node
    return centre


def visiting_order(degree: np.ndarray) -> np.ndarray:
    """Nodes (indexed in keep order) by most edges first, then keep order."""
    return np.lexsort((np.arange(len(degree)), -degree))


def _survivors(ids: np.ndarray, langs: np.ndarray, centre: np.ndarray) -> list[tuple[str, str, str, str]]:
    """(doc_id, lang, survivor, centre id) for each member that is not its cluster's survivor:
    the member with the smallest index (keep order) survives."""
    best = np.full(len(ids), len(ids), dtype=np.int64)
    np.minimum.at(best, centre, np.arange(len(ids)))
    survivor = best[centre]
    lost = np.flatnonzero(survivor != np.arange(len(ids)))
    return list(zip(ids[lost].tolist(), langs[lost].tolist(), ids[survivor[lost]].tolist(),
                    ids[centre[lost]].tolist(), strict=True))


#: The losers carry their language so that their drops rows need no second read of the documents.
LOSERS_SCHEMA = "doc_id string, lang string, _dup_of string, _cluster string"


def centre_clusters_local(edges: Any, ranks: Any) -> Clusters:
    """The greedy loop on the driver: `edges` (u, v) and `ranks` (doc_id, lang, _rank) are
    collected, so the caller bounds the graph's size."""
    from pyspark.sql import functions as F

    spark = edges.sparkSession
    nodes = (edges.select(F.col("u").alias("doc_id")).unionByName(edges.select(F.col("v").alias("doc_id")))
             .distinct().join(ranks, "doc_id"))
    known = [(r.doc_id, r.lang) for r in nodes.orderBy("_rank").select("doc_id", "lang").toLocalIterator()]
    ids = np.array([doc_id for doc_id, _ in known], dtype=object)
    langs = np.array([lang for _, lang in known], dtype=object)
    if len(ids) == 0:
        return Clusters(losers=spark.createDataFrame([], LOSERS_SCHEMA), rounds=0, clusters=0)
    index = {doc_id: i for i, doc_id in enumerate(ids.tolist())}
    u_ids, v_ids = [], []
    for row in edges.select("u", "v").toLocalIterator():
        u_ids.append(index[row.u])
        v_ids.append(index[row.v])
    u, v = np.array(u_ids, dtype=np.int64), np.array(v_ids, dtype=np.int64)
    degree = np.bincount(np.concatenate([u, v]), minlength=len(ids))
    centre = greedy_centres(visiting_order(degree), u, v, len(ids))
    losers = local_frame(spark, _survivors(ids, langs, centre), LOSERS_SCHEMA)
    sizes = np.unique(centre, return_counts=True)[1]
    return Clusters(losers=losers, rounds=1, clusters=int((sizes > 1).sum()))


def centre_clusters(edges: Any, ranks: Any, *, max_rounds: int = 50) -> Clusters:
    """The same clusters computed in Spark, one connected-components pass per round."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    spark = edges.sparkSession
    current = edges.select("u", "v").persist(StorageLevel.MEMORY_AND_DISK)
    ends = current.select(F.col("u").alias("node")).unionByName(current.select(F.col("v").alias("node")))
    # Visiting order, fixed from the whole graph: most edges first, then the keep rule.
    order = (ends.groupBy("node").agg(F.count(F.lit(1)).alias("degree"))
             .join(ranks.withColumnRenamed("doc_id", "node"), "node")
             .select("node", F.struct((-F.col("degree")).alias("d"), F.col("_rank").alias("r")).alias("_order"),
                     "_rank", "lang")
             .persist(StorageLevel.MEMORY_AND_DISK))
    rounds, members = 0, []
    while rounds < max_rounds and current.take(1):
        rounds += 1
        labels = connected_components(current).labels  # (node, component)
        centre = (labels.join(order, "node").groupBy("component")
                  .agg(F.min_by("node", "_order").alias("centre")))
        of_node = labels.join(centre, "component").select("node", "centre").persist(StorageLevel.MEMORY_AND_DISK)
        both = current.unionByName(current.select(F.col("v").alias("u"), F.col("u").alias("v")))
        claimed = (both.join(of_node.withColumnRenamed("node", "u"), "u")
                   .where(F.col("v") == F.col("centre"))
                   .select(F.col("u").alias("node"), "centre")
                   .unionByName(centre.select(F.col("centre").alias("node"), "centre"))
                   .distinct().persist(StorageLevel.MEMORY_AND_DISK))
        members.append(claimed)
        nxt = (current.join(claimed.select(F.col("node").alias("u")), "u", "left_anti")
               .join(claimed.select(F.col("node").alias("v")), "v", "left_anti")
               .select("u", "v").localCheckpoint(eager=True))
        of_node.unpersist()
        current.unpersist()
        current = nxt
    current.unpersist()
    if not members:
        order.unpersist()
        return Clusters(losers=spark.createDataFrame([], LOSERS_SCHEMA), rounds=0, clusters=0)
    everyone = members[0]
    for part in members[1:]:
        everyone = everyone.unionByName(part)
    everyone = everyone.join(order.select("node", "_rank", "lang"), "node")
    best = everyone.groupBy("centre").agg(F.min_by("node", "_rank").alias("survivor"))
    clusters = best.count()
    # Checkpointed: the rounds' lineage (each round's frames built on the last) stays behind.
    losers = (everyone.join(best, "centre").where(F.col("node") != F.col("survivor"))
              .select(F.col("node").alias("doc_id"), "lang", F.col("survivor").alias("_dup_of"),
                      F.col("centre").alias("_cluster"))
              .localCheckpoint(eager=True))
    return Clusters(losers=losers, rounds=rounds, clusters=int(clusters), cached=(order, *members))
