"""Tokenise a pinned table version on the executors and write each language as Megatron shard parts.

Documents go to a language's shard in doc_id order — doc_id is a hash, so this is a fixed
pseudo-random order, the same on every run. Two Spark jobs, no token through the driver: first
each task tokenises a contiguous range of the (lang, doc_id) order with the tokenizer file the
driver resolved and shipped (`data_engine.tokenizer.ship`) into pieces of its own; then one task
per part window (`export.parts`: cut by token offsets, so the same documents give the same parts)
copies its documents out of those pieces into `<lang>-<digest>_text_document_<k>.bin/.idx`. The
driver checks it sees every part the executors wrote, renames them in under the language's
content digest, commits `shard_manifest` (one row per part) and only then removes the shards it
replaced (see `export.manifest`).

A top-percent selection (a mixture plan's high-quality shards) keeps, per language, the documents
`quality.rank` ranks within ⌈p·n/100⌉ — the same documents token accounting's quality bands ≤ p
count — before anything is tokenised.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_engine import lake
from data_engine.errors import ConfigError, InputError, LakeVisibilityError, SailyardError
from data_engine.export.config import ExportConfig
from data_engine.export.indexed_dataset import token_dtype
from data_engine.export.manifest import (
    DIGEST_COLUMNS,
    MANIFEST_SCHEMA,
    SHARD_SUFFIX,
    commit_manifest,
    manifest_digest,
    part_prefix,
    read_manifest,
    remove_unreferenced,
    replace_rows,
    row_order,
    shard_stem,
    write_stage_json,
)
from data_engine.export.parts import NOT_SHARED, Window, plan_windows, visible
from data_engine.langs import UNKNOWN, normalize_lang
from data_engine.quality.rank import keep_count, ranks_within_language
from data_engine.stage import read_input
from data_engine.tables import DOCS_CURATED, DOCS_DEDUP, SHARD_MANIFEST
from data_engine.tokenizer import MISMATCH, TokenizerIdentity, identity, ship

__all__ = ["DIGEST_COLUMNS", "MANIFEST_SCHEMA", "SHARD_SUFFIX", "ExportResult", "export_shards",
           "manifest_digest", "select_langs"]

PIECE_SCHEMA = ("lang string, task int, bin_path string, lengths_path string, docs long, "
                "tokens long, dropped long")
PART_SCHEMA = ("lang string, window long, bin_path string, idx_path string, docs long, tokens long, "
               "bytes long, checksum string, idx_checksum string")
PART_KEYS = ("part", "prefix", "docs", "tokens", "bytes", "checksum", "idx_checksum")


@dataclass
class ExportResult:
    stage: str
    source_table: str
    source_version: int
    out_dir: str
    docs: int = 0
    tokens: int = 0
    dropped: int = 0
    shards: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Language → `{prefix, docs, tokens, parts}`: the parts' common prefix (each part is
    `<prefix>_<k>`), the language's totals and its parts (`part`, `prefix`, `docs`, `tokens`,
    `bytes`, `checksum`, `idx_checksum`), in part order."""
    tables: dict[str, int] = field(default_factory=dict)
    manifest_digest: str = ""
    """Digest of the stage's manifest rows after this export (every language of the stage)."""
    langs_replaced: list[str] = field(default_factory=list)
    """Languages whose rows of the stage this export replaced (all of the stage's without `langs`)."""
    removed: list[str] = field(default_factory=list)
    """Prefixes of the replaced shards whose files were deleted after the commit."""
    tokenizer: dict[str, Any] = field(default_factory=dict)
    selected: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per language of a top-percent selection: `docs` in the table, `kept` by the selection
    (before the tokenizer's `min_tokens` drops); the others are not exported, by choice."""
    plan_digest: str | None = None


def _tokenize_partitions(pieces_dir: str, shipped: str, tok: TokenizerIdentity, dtype: str,
                         batch_docs: int, min_tokens: int) -> Any:
    name, digest, eod_id = tok.name, tok.digest, tok.eod_id

    def tokenize(batches: Iterator[Any]) -> Iterator[Any]:
        from array import array

        import numpy as np
        import pandas as pd
        from pyspark import SparkFiles, TaskContext

        from data_engine.tokenizer import load_verified

        ctx = TaskContext.get()
        tag = f"{ctx.partitionId():05d}-{ctx.attemptNumber()}-{uuid.uuid4().hex[:8]}"
        tokenizer = load_verified(SparkFiles.get(shipped), digest, name)  # checked in every task
        os.makedirs(pieces_dir, exist_ok=True)  # as this executor sees the folder
        np_dtype = np.dtype(dtype)
        eod = np.array([eod_id], dtype=np_dtype).tobytes()
        state: dict[str, dict[str, Any]] = {}
        for pdf in batches:
            for lang, group in pdf.groupby("lang", sort=False):
                st = state.get(lang)
                if st is None:
                    base = Path(pieces_dir) / f"{lang}-{tag}"
                    st = state[lang] = {"bin": open(f"{base}.bin", "wb"), "base": str(base),  # noqa: SIM115
                                        "lengths": array("i"), "dropped": 0}
                texts = [t if isinstance(t, str) else "" for t in group["text"].tolist()]
                for start in range(0, len(texts), batch_docs):
                    encodings = tokenizer.encode_batch(texts[start:start + batch_docs], add_special_tokens=False)
                    for enc in encodings:
                        if len(enc.ids) < min_tokens:
                            st["dropped"] += 1
                            continue
                        st["bin"].write(np.fromiter(enc.ids, dtype=np_dtype, count=len(enc.ids)).tobytes())
                        st["bin"].write(eod)
                        st["lengths"].append(len(enc.ids) + 1)
        rows = []
        for lang, st in state.items():
            st["bin"].close()
            lengths = np.frombuffer(st["lengths"], dtype=np.int32) if st["lengths"] else np.zeros(0, np.int32)
            np.save(f"{st['base']}.lengths.npy", lengths)
            rows.append({"lang": lang, "task": ctx.partitionId(), "bin_path": f"{st['base']}.bin",
                         "lengths_path": f"{st['base']}.lengths.npy", "docs": len(lengths),
                         "tokens": int(lengths.astype(np.int64).sum()), "dropped": st["dropped"]})
        if rows:  # an empty object-typed frame does not convert to the declared Arrow schema
            yield pd.DataFrame(rows, columns=["lang", "task", "bin_path", "lengths_path", "docs",
                                              "tokens", "dropped"])

    return tokenize


def _write_windows(parts_dir: str, windows: Any, dtype: str) -> Any:
    """The part-writing task: `windows` is a broadcast list, each input row an index into it."""

    def write(batches: Iterator[Any]) -> Iterator[Any]:
        import numpy as np
        import pandas as pd
        from pyspark import TaskContext

        from data_engine.export.parts import write_window

        ctx = TaskContext.get()
        os.makedirs(parts_dir, exist_ok=True)
        for pdf in batches:
            rows = []
            for i in pdf["id"].tolist():
                w = windows.value[int(i)]
                tag = f"{w.lang}-{w.index:06d}-{ctx.attemptNumber()}-{uuid.uuid4().hex[:8]}"
                written = write_window(w, np.dtype(dtype), str(Path(parts_dir) / tag))
                if written is not None:
                    rows.append(written)
            if rows:
                yield pd.DataFrame(rows, columns=[c.split()[0] for c in PART_SCHEMA.split(", ")])

    return write


def export_shards(spark: Any, lake_dir: str, out_dir: str, stage: str,
                  cfg: ExportConfig = ExportConfig(), *, input_version: int | None = None,
                  run: Any = None, top_percent: Mapping[str, float] | None = None,
                  plan_digest: str | None = None, whole_stage: bool = False) -> ExportResult:
    """Export `cfg.langs` (default: every known language) of a pinned table version as `stage`.

    Without `cfg.langs` the stage's manifest rows are all replaced; with it, only those languages'
    rows — the stage's other shards and rows stay as they are — unless `whole_stage`, with which
    the stage becomes exactly the languages exported (a plan's shard group).

    Args:
        top_percent: language → p in (0, 100]: of that language only the documents ranked
            ≤ keep_count(n, p) by `quality.rank.ranks_within_language` (n: its documents in the table
            version) are exported; languages not named are exported whole.
        plan_digest: recorded in every manifest row this export writes.

    Raises:
        ConfigError: a bad stage name, a selected language without documents in the table, a
            partial export with another tokenizer than the stage's other shards, or a top-percent
            selection that is out of range, names a language not exported or without any scored
            document, or is asked of a table without `quality_score`.
        InputError: nothing to export (no documents, or none with `min_tokens` tokens). In every
            error case no shard file and no manifest row has changed.
        TableConflictError: another export committed the manifest meanwhile; nothing committed.
    """
    if not stage or "/" in stage or stage.startswith("."):
        raise ConfigError(f"--stage must be a plain name such as 'stage1', got {stage!r}")
    tok = identity(cfg.tokenizer, cfg.eod_id)  # a hub name resolves to one snapshot, here, once
    table = cfg.input_table or lake.first_existing(lake_dir, (DOCS_CURATED, DOCS_DEDUP), purpose="export")
    source = read_input(spark, lake_dir, table, input_version)
    if run is not None:
        run.table_read(source.name, source.path, source.version)
    where = f"{table} v{source.version}"
    counts = {r.lang: r["count"] for r in source.df.groupBy("lang").count().collect()}  # one row per language
    langs = select_langs(cfg.langs, counts, where)
    selection = _check_selection(top_percent, langs, source.df, where)
    replacing = set(langs) if cfg.langs and not whole_stage else None
    base, old_rows = read_manifest(lake_dir)
    _check_stage_tokenizer(old_rows, stage, replacing, tok)
    dtype = token_dtype(max(tok.vocab_size, tok.eod_id + 1))
    stage_dir = Path(out_dir).expanduser().resolve() / stage
    stage_dir.mkdir(parents=True, exist_ok=True)
    result = ExportResult(stage, table, source.version, str(stage_dir), tokenizer=tok.as_dict(),
                          plan_digest=plan_digest)
    # Unknown-language text is not training data: counted as dropped unless asked for.
    result.dropped = 0 if cfg.langs else sum(n for lang, n in counts.items() if lang not in langs)
    sweep_dead_attempts(stage_dir)
    work = stage_dir / f"{TMP_PREFIX}{uuid.uuid4().hex}"
    owner = _hold(work)  # locked before the folder exists: a racing sweep never sees it unowned
    work.mkdir(parents=True)
    cached: list[Any] = []
    try:
        df = source.df
        if selection:
            df, ranks = _select_top(spark, df, selection, counts)
            cached.append(ranks)
            result.selected = {lang: {"docs": counts[lang], "kept": keep_count(counts[lang], p)}
                               for lang, p in sorted(selection.items())}
        written = _tokenize_into_parts(spark, df, langs, work, tok, dtype, cfg, result)
        if not written:
            raise InputError(f"{where}: none of the {sum(counts.get(x, 0) for x in langs)} documents of "
                             f"{', '.join(langs)} has {cfg.min_tokens} or more tokens; nothing was exported "
                             "and no shard was changed")
        new_rows = [row for lang, parts in sorted(written.items())
                    for row in _place(lang, parts, stage_dir, stage, table, source.version, tok, dtype.name,
                                      plan_digest, cfg.part_bytes)]
        rows, gone = replace_rows(old_rows, stage, replacing, new_rows)
        meta = {"job": "export_shards", "stage": stage, "langs": ",".join(langs),
                "mlflow_run_id": getattr(run, "run_id", "")}
        try:
            result.tables[SHARD_MANIFEST] = commit_manifest(spark, lake_dir, rows, base=base, metadata=meta)
        except BaseException:
            # Our new files, unless a manifest (the one we read, or one committed meanwhile) names them.
            remove_unreferenced(new_rows, old_rows + read_manifest(lake_dir)[1], stage_dir)
            raise
        result.manifest_digest = write_stage_json(stage_dir, stage, rows)
        result.langs_replaced = sorted({r["lang"] for r in gone} | {r["lang"] for r in new_rows})
        result.removed = remove_unreferenced(gone, rows, stage_dir)
        result.shards = shard_summary(new_rows)
    finally:
        for frame in cached:
            frame.unpersist()
        shutil.rmtree(work, ignore_errors=True)
        _release(work, owner)
    return result


TMP_PREFIX = "_tmp-"
"""An attempt's working folder in the stage folder: `_tmp-<attempt>/` (parts before they are placed)."""
LOCK_SUFFIX = ".lock"
"""Beside it, `_tmp-<attempt>.lock`: locked (flock) by the export's driver while the attempt lives."""
UNLOCKED_AGE_S = 24 * 3600
"""A working folder with no lock file (a filesystem without flock, an older version) counts as
abandoned once nothing in it changed for this long."""


def _hold(work: Path) -> Any:
    """Lock the attempt's lock file for as long as this process lives (the kernel drops the lock
    when it dies, so a later export knows the folder is abandoned); None where flock is refused."""
    import fcntl

    handle = open(work.with_name(work.name + LOCK_SUFFIX), "a+")  # noqa: SIM115 - held until _release
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def _release(work: Path, handle: Any) -> None:
    work.with_name(work.name + LOCK_SUFFIX).unlink(missing_ok=True)
    if handle is not None:
        handle.close()


def _owned(lock: Path) -> bool:
    """`lake.lock_held`, except that where flock itself is refused the folder counts as owned:
    never remove what might be live."""
    try:
        return lake.lock_held(lock)
    except OSError:
        return True


def _newest_change(folder: Path) -> float:
    times = [folder.stat().st_mtime]
    for root, _dirs, files in os.walk(folder):
        times += [os.stat(os.path.join(root, f)).st_mtime for f in files]
    return max(times)


def sweep_dead_attempts(stage_dir: Path) -> list[str]:
    """Remove the working folders of exports that died before cleaning up (a SIGKILL, a lost node):
    their half-written parts are never referenced by a manifest. A folder whose lock a live export
    holds is left alone, so two exports racing in one stage folder never delete each other's work.
    Returns the names removed."""
    import time

    removed = []
    now = time.time()
    for folder in sorted(stage_dir.glob(f"{TMP_PREFIX}*")):
        if not folder.is_dir():
            continue
        lock = folder.with_name(folder.name + LOCK_SUFFIX)
        if lock.exists():
            if _owned(lock):
                continue
        elif now - _newest_change(folder) < UNLOCKED_AGE_S:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        lock.unlink(missing_ok=True)
        removed.append(folder.name)
    for lock in stage_dir.glob(f"{TMP_PREFIX}*{LOCK_SUFFIX}"):  # an attempt killed before its mkdir
        if not lock.with_suffix("").exists() and not _owned(lock):
            lock.unlink(missing_ok=True)
    return removed


def _check_selection(top_percent: Mapping[str, float] | None, langs: list[str], df: Any,
                     where: str) -> dict[str, float]:
    """The selection with table codes (`th` → `tha`), checked before any work is done."""
    if not top_percent:
        return {}
    if "quality_score" not in df.columns:
        raise ConfigError(f"a top-percent selection needs quality scores, but {where} has no quality_score "
                          "column; export docs_scored (written by score_quality)")
    selection: dict[str, float] = {}
    problems = []
    for given, percent in top_percent.items():
        code = normalize_lang(given)
        if isinstance(percent, bool) or not isinstance(percent, int | float) or not 0 < percent <= 100:
            problems.append(f"{given}: the percent must be a number in (0, 100], got {percent!r}")
        elif code not in langs:
            problems.append(f"{given}: not among the languages exported ({', '.join(langs)})")
        else:
            selection[code] = percent
    if problems:
        raise ConfigError(f"top_percent for {where}: " + "; ".join(problems) + "; no shard was changed")
    from pyspark.sql import functions as F

    scored = {r.lang for r in df.where(F.col("lang").isin(sorted(selection)) & F.col("quality_score").isNotNull())
              .select("lang").distinct().collect()}
    unscored = sorted(set(selection) - scored)
    if unscored:
        raise ConfigError(f"top_percent for {where}: {', '.join(unscored)} {'has' if len(unscored) == 1 else 'have'} "
                          "no scored document, so a top-percent selection would be arbitrary; export "
                          "it whole or score it first; no shard was changed")
    return selection


def _select_top(spark: Any, df: Any, selection: Mapping[str, float], counts: Mapping[str, int]) -> tuple[Any, Any]:
    """(the documents kept, the persisted ranks to release after use): languages of `selection`
    keep ranks ≤ keep_count(n, p); other languages pass whole."""
    from pyspark.sql import functions as F

    ranks = ranks_within_language(spark, df.where(F.col("lang").isin(sorted(selection))))
    keep = F.broadcast(spark.createDataFrame(
        [(lang, keep_count(counts[lang], p)) for lang, p in sorted(selection.items())], "lang string, _keep long"))
    kept = (df.join(ranks, "doc_id", "left").join(keep, "lang", "left")
            .where(F.col("_keep").isNull() | (F.col("_rank") <= F.col("_keep")))
            .drop("_rank", "_keep"))
    return kept, ranks


def select_langs(requested: tuple[str, ...], counts: dict[str, int], where: str) -> list[str]:
    """The table codes to export: `requested` normalised like ingest's tags (`th` → `tha`), each of
    which must have documents in the table; by default every language there except `und`."""
    present = sorted(lang for lang, n in counts.items() if n > 0)
    if not requested:
        langs = [lang for lang in present if lang != UNKNOWN]
        if not langs:
            raise InputError(f"{where} has no documents of a known language to export "
                             f"({sum(counts.values())} documents, languages present: {present}); "
                             "no shard was changed")
        return langs
    chosen: list[str] = []
    missing = []
    for given in requested:
        code = normalize_lang(given)
        if code == UNKNOWN and given.strip().lower() != UNKNOWN:
            missing.append(f"{given!r} (not a language tag)")
        elif counts.get(code, 0) == 0:
            missing.append(repr(given) if code == given.strip() else f"{given!r} (= {code})")
        elif code not in chosen:
            chosen.append(code)
    if missing:
        raise ConfigError(f"export.langs: {', '.join(missing)} {'has' if len(missing) == 1 else 'have'} "
                          f"no documents in {where} (languages present: {present}); no shard was changed")
    return sorted(chosen)


def _check_stage_tokenizer(old_rows: list[dict[str, Any]], stage: str, replacing: set[str] | None,
                           tok: TokenizerIdentity) -> None:
    """A partial export must use the tokenizer of the stage's shards it keeps: one stage, one vocabulary."""
    if replacing is None:
        return
    other = {(r["tokenizer"], r["tokenizer_digest"], r["eod_id"]) for r in old_rows
             if r["stage"] == stage and r["lang"] not in replacing}
    foreign = sorted(o for o in other if (o[1], o[2]) != (tok.digest, tok.eod_id))
    if foreign:
        name, digest, eod = foreign[0]
        raise ConfigError(f"stage {stage!r} keeps shards tokenised with {name!r} (sha256 {str(digest)[:12]}…, "
                          f"EOD {eod}); exporting only {', '.join(sorted(replacing))} with {tok.name!r} "
                          f"({tok.digest[:12]}…, EOD {tok.eod_id}) would mix tokenizers in one stage. "
                          "Export the whole stage (no --langs) to change tokenizer")


def _tokenize_into_parts(spark: Any, df: Any, langs: list[str], work: Path, tok: TokenizerIdentity,
                         dtype: Any, cfg: ExportConfig, result: ExportResult) -> dict[str, list[dict[str, Any]]]:
    """lang → its parts written in `work/parts` (`export.parts.write_window`'s rows, in part
    order); tokenizer drops, documents and tokens added to `result`.

    Raises:
        LakeVisibilityError: the driver does not see a part an executor wrote (no shared disk).
    """
    from pyspark.sql import functions as F

    shipped = ship(spark, tok)
    partitions = int(spark.conf.get("spark.sql.shuffle.partitions"))
    tokenize = _tokenize_partitions(str(work / "pieces"), shipped, tok, dtype.str, cfg.batch_docs, cfg.min_tokens)
    try:
        pieces = (df.select("doc_id", "lang", "text").where(F.col("lang").isin(langs))
                  .repartitionByRange(partitions, "lang", "doc_id")
                  .sortWithinPartitions("lang", "doc_id")
                  .mapInPandas(tokenize, PIECE_SCHEMA)
                  .collect())  # one small row per (task, language): file paths and counts
    except Exception as exc:
        line = next((x for x in str(exc).splitlines() if MISMATCH in x), None)
        if line is None:
            raise
        raise SailyardError(line[line.index(MISMATCH):].strip()) from exc
    by_lang: dict[str, list[Any]] = {}
    for p in sorted(pieces, key=lambda r: (r.lang, r.task)):  # task order is doc_id order
        by_lang.setdefault(p.lang, []).append(p)
        result.dropped += p.dropped
    part_tokens = None if cfg.part_bytes is None else max(1, cfg.part_bytes // dtype.itemsize)
    windows: list[Window] = []
    for lang, lang_pieces in sorted(by_lang.items()):
        windows += plan_windows(lang, [(p.bin_path, p.lengths_path, p.docs, p.tokens) for p in lang_pieces],
                                part_tokens)
    if not windows:
        return {}
    shared = spark.sparkContext.broadcast(windows)  # small: per window its bounds and pieces' paths
    try:
        rows = (spark.range(0, len(windows), 1, numPartitions=len(windows))  # one task per part
                .mapInPandas(_write_windows(str(work / "parts"), shared, dtype.str), PART_SCHEMA)
                .collect())  # one small row per part
    except Exception as exc:
        line = next((x for x in str(exc).splitlines() if NOT_SHARED in x), None)
        if line is None:
            raise
        line = line.split("RuntimeError: ", 1)[-1].strip()  # the task's own words, not the traceback's
        raise LakeVisibilityError(f"{line}; nothing was committed") from exc
    finally:
        shared.destroy()
    unseen = [r.bin_path for r in rows if not visible(r.asDict())]
    if unseen:
        raise LakeVisibilityError(
            f"the driver cannot see the executors' output: {len(unseen)} of the {len(rows)} shard parts they "
            f"wrote under {work} are not there as written (e.g. {unseen[0]}; node-local disks?); put the shard "
            "folder on storage every node shares (a shared mount); nothing was committed")
    written: dict[str, list[dict[str, Any]]] = {}
    for r in sorted(rows, key=lambda r: (r.lang, r.window)):
        written.setdefault(r.lang, []).append(r.asDict())
        result.docs += r.docs
        result.tokens += r.tokens
    return written


def _place(lang: str, parts: list[dict[str, Any]], stage_dir: Path, stage: str, table: str, version: int,
           tok: TokenizerIdentity, dtype: str, plan_digest: str | None = None,
           part_bytes: int | None = None) -> list[dict[str, Any]]:
    """Move a language's written parts into the stage folder under its content names; their
    manifest rows, in part order.

    An atomic rename each: the names are new unless parts of identical bytes are already there,
    so the files the committed manifest points at are never changed.
    """
    stem = stage_dir / shard_stem(lang, [(p["checksum"], p["idx_checksum"]) for p in parts])
    rows = []
    for k, part in enumerate(parts):
        prefix = part_prefix(str(stem), k)
        os.replace(part["bin_path"], f"{prefix}.bin")
        os.replace(part["idx_path"], f"{prefix}.idx")
        rows.append({"stage": stage, "lang": lang, "prefix": prefix, "part": k, "docs": part["docs"],
                     "tokens": part["tokens"], "bytes": part["bytes"], "checksum": part["checksum"],
                     "idx_checksum": part["idx_checksum"], "source_table": table, "source_version": version,
                     "tokenizer": tok.name, "tokenizer_digest": tok.digest, "tokenizer_revision": tok.revision,
                     "vocab_size": tok.vocab_size, "eod_id": tok.eod_id, "dtype": dtype, "plan_digest": plan_digest,
                     "part_bytes": part_bytes})
    return rows


def shard_summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Language → `{prefix, docs, tokens, parts}` of manifest rows (`ExportResult.shards`)."""
    out: dict[str, dict[str, Any]] = {}
    for row in sorted(rows, key=row_order):
        lang = out.setdefault(row["lang"], {"prefix": row["prefix"].rsplit("_", 1)[0], "docs": 0, "tokens": 0,
                                            "parts": []})
        lang["docs"] += row["docs"]
        lang["tokens"] += row["tokens"]
        lang["parts"].append({k: row.get(k) for k in PART_KEYS})
    return out
