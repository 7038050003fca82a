"""The harness: suites, items, shots, the CLI's JSON line and its MLflow runs, compare."""

from __future__ import annotations

import json
import math

import pytest

from data_engine.errors import ConfigError
from data_engine.langs import LANGS
from eval import datasets
from eval.items import ItemsError, read_choice_jsonl, read_text_jsonl
from eval.suites import load_suite, task_langs
from eval.tasks import build_items, suite_data_root

SHARED = datasets.default_data_root()
needs_shared = pytest.mark.skipif(not (SHARED / "sib200").is_dir(),
                                  reason=f"the real eval sets are not at {SHARED} (set SAILYARD_EVAL_DATA)")


def _items(suite_name: str, task_name: str, lang: str):
    suite, path = load_suite(suite_name)
    task = next(t for t in suite.tasks if t.name == task_name)
    return task, build_items(task, lang, suite_data_root(suite, path), path.parent)


# --- the shipped suite: held-out UDHR text, never training text -----------------------------------

def test_mini_suite_covers_all_15_languages_with_heldout_udhr_text_the_sample_never_contains(tmp_path):
    from data_engine.sample.corpus import build_sample
    from data_engine.sample.positives import write_positive_sets

    build_sample(tmp_path / "sample", docs_per_lang=40)
    write_positive_sets(tmp_path / "positives")
    import gzip

    import pyarrow.parquet as pq

    corpus = []
    for f in sorted((tmp_path / "sample").iterdir()):
        if f.suffix == ".parquet":
            try:
                corpus.extend(str(t) for t in pq.read_table(f).column("text").to_pylist())
            except (KeyError, Exception):  # the wrong-schema file
                continue
        elif f.name.endswith(".gz"):
            corpus.append(gzip.decompress(f.read_bytes()).decode("utf-8", "replace"))
        else:
            corpus.append(f.read_bytes().decode("utf-8", "replace"))
    corpus.extend(p.read_text(encoding="utf-8") for p in (tmp_path / "positives").iterdir())
    blob = "\n".join(corpus)
    # JSON escapes non-ASCII in some writers: compare on decoded JSON strings too
    decoded = "\n".join(str(json.loads(line).get("text")) for part in corpus for line in part.splitlines()
                        if line.startswith("{") and _is_json(line))
    suite, _ = load_suite("mini")
    assert [t.name for t in suite.tasks] == ["udhr_bpb", "udhr_cloze", "curated_bpb"]
    for lang in LANGS:
        _, docs = _items("mini", "udhr_bpb", lang)
        _, cloze = _items("mini", "udhr_cloze", lang)
        assert len(docs) >= 8 and len(cloze) >= 4, lang
        for doc in docs:
            probe = doc.text[:60]
            assert probe not in blob and probe not in decoded, (lang, probe)


def _is_json(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except json.JSONDecodeError:
        return False


def test_udhr_cloze_items_have_one_true_continuation_among_four_and_spaceless_scripts_split_cleanly():
    import unicodedata

    paragraphs = {lang: datasets.udhr_heldout(lang) for lang in ("tha", "khm", "zho", "eng")}
    for lang, paras in paragraphs.items():
        _, items = _items("mini", "udhr_cloze", lang)
        for item in items:
            assert len(item.choices) == 4 and len(set(item.choices)) == 4
            whole = item.context + " " + item.choices[item.gold]
            # the gold continuation completes a real held-out paragraph (spaces aside)
            assert any(whole.replace(" ", "") == p.replace(" ", "") for p in paras), (lang, item.id)
            # no choice starts with a combining mark (a Thai/Khmer vowel cut from its consonant)
            assert all(not unicodedata.category(c[0]).startswith("M") for c in item.choices)


# --- real SEA sets ----------------------------------------------------------------------------------

@needs_shared
def test_sea_mini_builds_every_task_with_shots_from_another_split_the_same_every_time():
    suite, path = load_suite("sea-mini")
    assert {t.name for t in suite.tasks} == {"sib200", "xcopa", "xquad", "flores_eng_x", "flores_x_eng", "flores_bpb",
                                         "curated_bpb"}
    sib = next(t for t in suite.tasks if t.name == "sib200")
    assert len(task_langs(sib)) == 15
    task, tha = _items("sea-mini", "sib200", "tha")
    _, again = _items("sea-mini", "sib200", "tha")
    assert tha == again and len(tha) == task.limit
    test_ids = {r["index_id"] for r in datasets.sib200(SHARED / "sib200", "tha", "test")}
    train_text = {r["text"] for r in datasets.sib200(SHARED / "sib200", "tha", "train")}
    for item in tha:
        assert item.id in test_ids
        shots = item.context.split("\n\n")[:-1]
        assert len(shots) == 3
        assert all(s.split("\nหัวข้อ:")[0] in train_text for s in shots)
        assert item.context.endswith("\nหัวข้อ:") and len(item.choices) == 7
    # FLORES: parallel by index_id, English → Thai
    _, flores = _items("sea-mini", "flores_eng_x", "tha")
    eng = {r["index_id"]: r["text"] for r in datasets.sib200(SHARED / "sib200", "eng", "test")}
    tha_ref = {r["index_id"]: r["text"] for r in datasets.sib200(SHARED / "sib200", "tha", "test")}
    for item in flores:
        assert item.prompt.endswith(f"อังกฤษ: {eng[item.id]}\nไทย:") and item.references == (tha_ref[item.id],)


@needs_shared
def test_xcopa_prompt_keeps_every_thai_letter_and_uses_lm_eval_connectors():
    _, items = _items("sea-mini", "xcopa", "tha")
    rows = {str(r["idx"]): r for r in datasets.xcopa(SHARED / "xcopa", "tha", "test")}
    for item in items:
        row = rows[item.id]
        connector = "เพราะ" if row["question"] == "cause" else "ดังนั้น"
        assert item.context == f"{row['premise']} {connector}"  # Thai premises end without a full stop
        assert item.gold == row["label"]
    _, ind = _items("sea-mini", "xcopa", "ind")
    row = {str(r["idx"]): r for r in datasets.xcopa(SHARED / "xcopa", "ind", "test")}[ind[0].id]
    assert ind[0].context.startswith(row["premise"].rstrip(".")) and not ind[0].context.startswith(row["premise"] + " ")


@needs_shared
def test_xquad_scores_only_articles_outside_the_shot_pool():
    _, items = _items("sea-mini", "xquad", "tha")
    rows = {r["id"]: r for r in datasets.xquad(SHARED / "xquad", "tha")}
    assert all(rows[i.id]["article"] >= datasets.XQUAD_FEWSHOT_ARTICLES for i in items)
    assert all(i.prompt.endswith("\nคำตอบ:") and "\ufeff" not in i.prompt for i in items)


def test_a_suite_whose_data_is_absent_skips_its_tasks_saying_where_it_looked(tmp_path, tiny_hf_model):
    from eval.harness import run_suite
    from eval.model import CausalLM
    from eval.suites import SuiteConfig, TaskConfig

    suite = SuiteConfig(name="x", data_root=str(tmp_path / "nowhere"), tasks=(
        TaskConfig(name="xcopa", type="multiple_choice", format="xcopa", data="xcopa", langs=("tha",),
                   template={"*": "{premise} {connector}"}, labels={"tha": ["เพราะ", "ดังนั้น"]}),))
    result = run_suite(CausalLM(tiny_hf_model), suite, tmp_path / "suite.yaml")
    assert result.results == {} and "nowhere" in result.skipped["xcopa"]


def test_suite_config_errors_name_the_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: b\ntasks:\n  - {name: t, type: corpus, format: xcopa}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="scored as multiple_choice"):
        load_suite(bad)
    leak = tmp_path / "leak.yaml"
    leak.write_text("name: b\ntasks:\n  - {name: t, type: multiple_choice, format: sib200_topic, split: test, "
                    "fewshot_split: test, shots: 2}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="scored split"):
        load_suite(leak)
    with pytest.raises(ConfigError, match="built-in suites"):
        load_suite(tmp_path / "missing.yaml")


def test_items_files_report_file_and_line(tmp_path):
    f = tmp_path / "mc.jsonl"
    f.write_text('{"id": 1, "lang": "tha", "context": "a", "choices": ["x", "y"], "gold": 1}\n{oops\n',
                 encoding="utf-8")
    with pytest.raises(ItemsError, match=r"mc.jsonl:2: not valid JSON"):
        read_choice_jsonl(f)
    f.write_text('{"id": 1, "lang": "tha", "context": "a", "choices": ["x", "y"], "gold": 2}\n', encoding="utf-8")
    with pytest.raises(ItemsError, match=r":1: 'gold' 2 is not an index"):
        read_choice_jsonl(f)
    f.write_text('{"id": "a", "lang": "tha"}\n', encoding="utf-8")
    with pytest.raises(ItemsError, match="missing field 'text'"):
        read_text_jsonl(f)
    f.write_text("\n", encoding="utf-8")
    with pytest.raises(ItemsError, match="holds no items"):
        read_text_jsonl(f)


# --- the CLI: JSON line, MLflow, compare ------------------------------------------------------------

def _last_json(out: str) -> dict:
    return json.loads([ln for ln in out.splitlines() if ln.strip()][-1])


def test_eval_cli_scores_items_files_logs_one_run_per_checkpoint_and_suite_and_compares(
        tmp_path, tiny_hf_model, capsys):
    from mlflow.tracking import MlflowClient

    from data_engine import tracking
    from jobs import evaluate as eval_job

    mc = tmp_path / "mc.jsonl"
    rows = [{"id": f"t{i}", "lang": "tha", "context": "ประเทศไทยมี", "choices": ["จังหวัด", "ภาค", "เมืองหลวง"],
             "gold": i % 3} for i in range(4)]
    rows += [{"id": f"e{i}", "lang": "eng", "context": "The capital of France is", "choices": ["Paris", "a city"],
              "gold": i % 2} for i in range(3)]
    mc.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    work = tmp_path / "work"
    args = ["--checkpoint", str(tiny_hf_model), "--mc", str(mc), "--work-dir", str(work), "--no-progress"]
    assert eval_job.main(args) == 0
    doc = _last_json(capsys.readouterr().out)
    assert doc["status"] == "ok" and set(doc["results"]["mc"]) == {"tha", "eng"}
    tha = doc["results"]["mc"]["tha"]
    assert tha["n"] == 4 and math.isclose(tha["chance"], 1 / 3, abs_tol=1e-6)
    assert 0 <= tha["acc"] <= 1 and tha["acc"] * 4 == round(tha["acc"] * 4)  # a share of 4 items
    # SEA-HELM normalisation of the primary metric, by hand
    expected = max(0.0, (tha["acc_norm"] - 1 / 3) / (1 - 1 / 3)) * 100  # noqa: E501
    assert math.isclose(doc["normalised"]["mc"]["tha"], expected, abs_tol=1e-3)
    client = MlflowClient(tracking_uri=tracking.tracking_uri(work))
    run = client.get_run(doc["mlflow_run_id"])
    assert run.data.tags["sailyard.kind"] == "eval" and run.data.metrics["mc.tha.acc"] == tha["acc"]
    assert "eval" in [a.path for a in client.list_artifacts(run.info.run_id)]
    # the same (checkpoint, suite) again: the same run, not a second one
    assert eval_job.main(args) == 0
    assert _last_json(capsys.readouterr().out)["mlflow_run_id"] == doc["mlflow_run_id"]
    assert len(tracking.find_runs(work, {"eval.suite": "mc"})) == 1

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"id": "1", "lang": "tha", "text": "สวัสดีครับ ยินดีต้อนรับ"}, ensure_ascii=False)
                      + "\n" + json.dumps({"id": "2", "lang": "tha", "text": "ภาษาไทย"}, ensure_ascii=False) + "\n",
                      encoding="utf-8")
    assert eval_job.main(["--checkpoint", str(tiny_hf_model), "--corpus", str(corpus), "--work-dir", str(work),
                          "--no-progress"]) == 0
    bpb = _last_json(capsys.readouterr().out)
    tha_bpb = bpb["results"]["corpus"]["tha"]
    assert tha_bpb["bytes"] == len("สวัสดีครับ ยินดีต้อนรับ".encode()) + len("ภาษาไทย".encode())
    assert "word_perplexity" not in tha_bpb and tha_bpb["bits_per_byte"] > 0

    assert eval_job.main(["compare", doc["mlflow_run_id"], bpb["mlflow_run_id"], "--work-dir", str(work)]) == 0
    out = capsys.readouterr().out
    assert "mc.tha.acc" in out and "corpus.tha.bits_per_byte" in out
    summary = _last_json(out)
    assert summary["status"] == "ok" and len(summary["runs"]) == 2


def test_eval_cli_refuses_what_is_not_a_checkpoint(tmp_path, capsys):
    from jobs import evaluate as eval_job

    (tmp_path / "empty").mkdir()
    code = eval_job.main(["--checkpoint", str(tmp_path / "empty"), "--suite", "mini", "--work-dir", str(tmp_path)])
    assert code == 2
    assert "neither a Hugging Face dir" in _last_json(capsys.readouterr().out)["error"]




# --- the checkpoint's own held-out shard documents ----------------------------------------------------

def test_heldout_range_is_megatrons_and_documents_decode_back_to_their_text(tmp_path):
    import numpy as np
    from megatron.core.datasets.blended_megatron_dataset_config import (
        convert_split_vector_to_split_matrix,
        parse_and_normalize_split,
    )

    from data_engine.export.indexed_dataset import write_index
    from data_engine.tokenizer import load_fast
    from eval.heldout import heldout_items, train_range_end

    for n in (1, 7, 10, 33, 1000):
        for split in ("98,2,0", "75,25,0", "1,1,1", "90,5,5"):
            matrix = convert_split_vector_to_split_matrix(parse_and_normalize_split(split))
            assert train_range_end(n, split) == int(round(matrix[0][1] * float(n))), (n, split)
    texts = [f"เอกสารที่ {i} ภาษาไทย" for i in range(8)]
    tok = load_fast("qwen2.5")
    ids = [tok.encode(t).ids + [151643] for t in texts]
    prefix = tmp_path / "tha-0123456789abcdef_text_document"
    np.concatenate([np.array(x, dtype=np.int32) for x in ids]).tofile(f"{prefix}.bin")
    write_index(f"{prefix}.idx", np.array([len(x) for x in ids], dtype=np.int32), np.dtype(np.int32))
    items = heldout_items([1.0, str(prefix)], "75,25,0", lambda t: tok.decode(t), eod_id=151643, limit=None)
    assert [i.text for i in items["tha"]] == texts[6:]
    assert [i.id for i in items["tha"]] == [f"{prefix.name}:6", f"{prefix.name}:7"]


def test_long_windows_are_scored_a_slice_of_positions_at_a_time_with_the_same_numbers(tiny_hf_model, monkeypatch):
    """Above the logits budget the output layer runs on slices (8 × 4,096 × 152k float32 logits would be
    20 GB): the log-likelihoods must not change."""
    from eval import model as model_module
    from eval.model import CausalLM, ModelConfig

    lm = CausalLM(tiny_hf_model, ModelConfig(batch_size=4, max_length=32))
    requests = [("ประเทศไทย มีจังหวัด", " เจ็ดสิบเจ็ด"), ("The capital of France is", " Paris"), ("", "สวัสดี")]
    docs = ["ภาษาไทยเป็นภาษาราชการ " * 20, "Tiếng Việt là ngôn ngữ chính thức. " * 12]
    whole, rolling = lm.loglikelihood(requests), lm.loglikelihood_rolling(docs)
    monkeypatch.setattr(model_module, "LOGITS_BUDGET", 0)
    monkeypatch.setattr(model_module, "POSITION_CHUNK", 5)
    sliced, rolling_sliced = lm.loglikelihood(requests), lm.loglikelihood_rolling(docs)
    for (a, ga), (b, gb) in zip(whole, sliced, strict=True):
        assert math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-4) and ga == gb
    assert all(math.isclose(a, b, rel_tol=1e-5) for a, b in zip(rolling, rolling_sliced, strict=True))
