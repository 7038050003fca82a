"""Connected components in Spark: long chains, huge stars, random graphs, the same labels every run."""

from __future__ import annotations

import math
import random

from data_engine.dedup.components import connected_components


def labels(spark, edges, schema="u long, v long"):
    result = connected_components(spark.createDataFrame(edges, schema))
    return {r.node: r.component for r in result.labels.collect()}, result.rounds


def union_find(edges):
    parent = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for u, v in edges:
        a, b = find(u), find(v)
        if a != b:
            parent[max(a, b)] = min(a, b)
    groups = {}
    for x in parent:
        groups.setdefault(find(x), []).append(x)
    return {x: min(g) for g in groups.values() for x in g}


def test_a_long_shuffled_chain_converges_in_logarithmic_rounds(spark):
    n = 10_000
    order = list(range(n))
    random.Random(1).shuffle(order)
    got, rounds = labels(spark, [(order[i], order[i + 1]) for i in range(n - 1)])
    assert len(got) == n and set(got.values()) == {0}
    assert rounds <= 2 * math.ceil(math.log2(n)), rounds


def test_a_100k_member_star_is_one_component(spark):
    got, rounds = labels(spark, [(0, i) for i in range(1, 100_001)])
    assert len(got) == 100_001 and set(got.values()) == {0} and rounds <= 3


def test_random_graph_matches_union_find_and_is_deterministic(spark):
    rng = random.Random(3)
    edges = [(f"d{rng.randrange(4000):05d}", f"d{rng.randrange(4000):05d}") for _ in range(3500)]
    first, _ = labels(spark, edges, "u string, v string")
    reference = union_find([(u, v) for u, v in edges if u != v])
    assert first == reference
    rng.shuffle(edges)  # another order, another partitioning: the same labels
    again, _ = labels(spark, [(v, u) for u, v in edges], "u string, v string")
    assert again == first
