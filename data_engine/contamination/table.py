"""The `contamination` table, and the verdict the eval harness attaches to its results.

One row per (item, training document) with a hit, plus one row per item with `doc_id` null that
speaks for the item over the whole audited table (hits = its distinct n-grams found anywhere,
share = hits / item_ngrams), so items without any hit are recorded too. The item verdicts
(`contaminated_any`, `contaminated_share`) are the same on every row of an item.

Partitioned by the audited `table`. An audit owns the rows of (table, version, task, lang) for the
tasks and languages it audits: re-running it replaces exactly those, and rows of other versions,
tasks and languages are carried over, so the table holds the latest audit of each task and
language on each table version.
"""

from __future__ import annotations

from typing import Any

from data_engine import lake
from data_engine.tables import CONTAMINATION  # re-exported by the package

COLUMNS = ("table", "version", "task", "lang", "item_id", "doc_id", "doc_lang", "hits", "share", "item_ngrams",
           "n", "unit", "contaminated_any", "contaminated_share", "share_threshold", "audit_run_id")
SCHEMA = ("`table` string, version long, task string, lang string, item_id string, doc_id string, doc_lang string, "
          "hits long, share double, item_ngrams long, n int, unit string, contaminated_any boolean, "
          "contaminated_share boolean, share_threshold double, audit_run_id string")
SORT_BY = ("version", "task", "lang", "item_id", "doc_id")


def verdict(lake_dir: str, table: str, version: int) -> dict[str, Any] | None:
    """The latest audit of exactly `table` at `version`, per task and language; None when none.

    Returns {"table", "version", "contamination_version" (the version of this table read), "items",
    "contaminated" (= "contaminated_any": items with any n-gram in the table), "contaminated_share"
    (items with at least the threshold share of their n-grams there), "tasks": {task: {lang:
    {"items", "contaminated_any", "contaminated_share", "share_threshold", "n", "unit",
    "audit_run_id"}}}} — `n`/`unit` the n-gram length of the language's items (the longest, when
    short items were audited whole).
    """
    import pyarrow.compute as pc

    current = lake.table_version(lake_dir, CONTAMINATION)
    if current is None:
        return None
    cols = ["table", "version", "task", "lang", "doc_id", "n", "unit", "contaminated_any", "contaminated_share",
            "share_threshold", "audit_run_id"]
    data = lake.read_arrow(lake_dir, CONTAMINATION, version=current, columns=cols)
    mask = pc.and_(pc.and_(pc.equal(data["table"], table), pc.equal(data["version"], int(version))),
                   pc.is_null(data["doc_id"]))
    rows = data.filter(mask).to_pylist()
    if not rows:
        return None
    tasks: dict[str, dict[str, dict[str, Any]]] = {}
    for r in sorted(rows, key=lambda r: (r["task"], r["lang"])):
        entry = tasks.setdefault(r["task"], {}).setdefault(r["lang"], {
            "items": 0, "contaminated_any": 0, "contaminated_share": 0, "share_threshold": r["share_threshold"],
            "n": 0, "unit": r["unit"], "audit_run_id": r["audit_run_id"]})
        entry["items"] += 1
        entry["contaminated_any"] += int(bool(r["contaminated_any"]))
        entry["contaminated_share"] += int(bool(r["contaminated_share"]))
        entry["n"] = max(entry["n"], int(r["n"]))
    total = {k: sum(e[k] for langs in tasks.values() for e in langs.values())
             for k in ("items", "contaminated_any", "contaminated_share")}
    return {"table": table, "version": int(version), "contamination_version": current, "items": total["items"],
            "contaminated": total["contaminated_any"], **total, "tasks": tasks}
