"""Ingest under races: the same input twice at once, and two batches of one source at once.

The same-input race runs two real `spark-submit jobs/ingest.py` processes started together (a
scheduler retrying a job that is still running), on a new lake and on an existing one. The
two-batch race is made deterministic: while one batch is between numbering its documents and
committing them, another batch with a shared (url, text) commits first.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from job_helpers import ROOT, job_env, spark_submit

from data_engine import lake
from data_engine.ingest import run as ingest_run
from data_engine.tables import DOCS_RAW, INGEST_LOG, QUARANTINE


def _write(path: Path, records: list[object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n"
                            for r in records), encoding="utf-8")
    return path


def _race(lake_dir: str, input_path: Path) -> list[dict]:
    env = dict(job_env(), JAVA_TOOL_OPTIONS="-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
               SAILYARD_SPARK_LOG_LEVEL="ERROR")
    cmd = [spark_submit(), "--master", "local[1]", "jobs/ingest.py", "--input", str(input_path),
           "--lake", lake_dir, "--source", "web"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, (stdout[-3000:], stderr[-2000:])
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def _docs(n: int, tag: str) -> list[dict]:
    return [{"text": f"{tag} เอกสาร {i} ข่าววันนี้", "url": f"https://ex.th/{tag}/{i}", "lang": "th"}
            for i in range(n)]


@pytest.mark.parametrize("existing", [False, True], ids=["new-lake", "existing-lake"])
def test_two_runs_of_the_same_input_started_together_commit_it_once(spark, tmp_path, existing):
    lake_dir = str(tmp_path / "lake")
    if existing:  # a lake that already holds another batch
        ingest_run.ingest(spark, lake_dir, [str(_write(tmp_path / "old" / "a.jsonl", _docs(3, "old")))],
                          source="web")
    before = {t: lake.table_version(lake_dir, t) for t in (DOCS_RAW, QUARANTINE, INGEST_LOG)}
    records = _docs(40, "new") + ["{not json"]
    summaries = _race(lake_dir, _write(tmp_path / "in" / "b.jsonl", records))

    committed = [s for s in summaries if s["tables"]]
    assert len(committed) == 1, summaries
    [other] = [s for s in summaries if s is not committed[0]]
    # The other one either lost the race (a concurrent run committed first) or started after the
    # winner had finished (its files are in ingest_log): both add nothing and exit 0.
    assert other["already_ingested"] or other["skipped_files"] == 1, other
    assert committed[0]["kept"] == 40 and committed[0]["quarantined"] == 1
    docs = lake.read_arrow(lake_dir, DOCS_RAW).to_pylist()
    new = [d for d in docs if "new" in d["text"]]
    assert len(new) == 40 and len({d["doc_id"] for d in docs}) == len(docs)
    assert sum(1 for r in lake.read_arrow(lake_dir, QUARANTINE).to_pylist() if r["payload"] == "{not json") == 1
    log = lake.read_arrow(lake_dir, INGEST_LOG).to_pylist()
    assert sum(1 for r in log if r["path"].endswith("b.jsonl")) == 1
    for table, version in before.items():  # exactly one new commit per table
        assert lake.table_version(lake_dir, table) == (0 if version is None else version + 1)


def test_concurrent_batches_of_one_source_never_share_a_doc_id(spark, tmp_path, monkeypatch):
    lake_dir = str(tmp_path / "lake")
    shared = {"text": "ข่าวเดียวกัน ข้อความเดียวกัน", "url": "https://ex.th/same", "lang": "th"}
    first = _write(tmp_path / "a" / "a.jsonl", [shared, *_docs(2, "a")])
    second = _write(tmp_path / "b" / "b.jsonl", [shared, *_docs(2, "b")])
    numbered = ingest_run._with_doc_ids
    raced = []

    def with_doc_ids(docs, lake_dir_, version, *args):
        out = numbered(docs, lake_dir_, version, *args)
        if not raced:  # batch B has numbered its documents; batch A commits before B does
            raced.append(version)
            ingest_run.ingest(spark, lake_dir, [str(first)], source="web")
        return out

    monkeypatch.setattr(ingest_run, "_with_doc_ids", with_doc_ids)
    result = ingest_run.ingest(spark, lake_dir, [str(second)], source="web")
    assert raced == [None] and result.docs == 3
    docs = lake.read_arrow(lake_dir, DOCS_RAW).to_pylist()
    assert len(docs) == 6 and len({d["doc_id"] for d in docs}) == 6
    same = sorted(d["doc_id"] for d in docs if d["url"] == "https://ex.th/same")
    assert len(same) == 2 and same[1] == same[0] + "-1"
    assert lake.table_version(lake_dir, DOCS_RAW) == 1
