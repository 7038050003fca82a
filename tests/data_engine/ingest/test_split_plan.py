"""Planning without Spark: split sizes, splits, and packing splits into tasks of about equal work."""

from __future__ import annotations

from data_engine.ingest import plan
from data_engine.ingest.plan import InputFile

MiB = 1024 * 1024


def test_split_size_leaves_no_core_idle_and_never_exceeds_split_bytes() -> None:
    one_big = [InputFile("/a.jsonl", "jsonl", 400 * MiB)]
    assert plan.split_size(one_big, 128 * MiB, 4) == (400 * MiB + plan.OPEN_COST) // 4
    assert plan.split_size(one_big, 64 * MiB, 4) == 64 * MiB
    tiny = [InputFile(f"/{i}.jsonl", "jsonl", 1000) for i in range(3)]
    assert plan.split_size(tiny, 128 * MiB, 8) == plan.OPEN_COST  # never below the cost of opening a file


def test_large_jsonl_and_parquet_are_cut_gzip_and_small_files_are_whole_and_hashed() -> None:
    for fmt in ("jsonl", "parquet"):
        splits = plan.splits_for(InputFile("/f", fmt, 250), 100)
        assert [(s.start, s.end, s.digest) for s in splits] == [(0, 100, False), (100, 200, False), (200, -1, False)]
    (gz,) = plan.splits_for(InputFile("/f.jsonl.gz", "jsonl.gz", 10_000), 100)
    (small,) = plan.splits_for(InputFile("/f.jsonl", "jsonl", 100), 100)
    assert (gz.start, gz.end, gz.digest) == (small.start, small.end, small.digest) == (0, -1, True)


def test_pack_balances_work_and_keeps_every_index_once() -> None:
    costs = [90.0, 10, 10, 10, 40, 40, 5, 5, 5, 85]
    groups = plan.pack(costs, 3)
    assert sorted(i for g in groups for i in g) == list(range(len(costs)))
    loads = [sum(costs[i] for i in g) for g in groups]
    assert max(loads) - min(loads) <= 10 and all(g == sorted(g) for g in groups)
    assert sorted(plan.pack([1.0, 2.0], 8)) == [[0], [1]]  # never an empty task
    assert plan.pack([3.0] * 5, 1) == [[0, 1, 2, 3, 4]]
