"""The audit in Spark on real Delta tables: planted items found with the hits their construction
implies, near misses not flagged, both verdicts, pinned versions, re-runs, decontamination."""

from __future__ import annotations

import json
import random
import unicodedata

import pytest

from data_engine import lake
from data_engine.contamination import CONTAMINATION, ContaminationConfig, Item, plan_audit, read_items, verdict
from data_engine.contamination.items import ItemsError
from data_engine.errors import ConfigError, TableNotFoundError
from data_engine.stage import commit_plan

DOCS = "docs_curated"
SCHEMA = "doc_id string, lang string, source string, text string"

IND20 = ("pemerintah kota bandung meresmikan taman baru yang dilengkapi perpustakaan kolam ikan jalur "
         "sepeda serta ruang bermain anak pada hari minggu").split()
ENG20 = ("the committee agreed that every coastal village should receive a new water pump before "
         "our rainy season begins next year").split()
SHARE20 = ("farmers in the northern valley planted seven hundred mango trees along a river to "
           "protect fertile soil from seasonal floods").split()
SHORT6 = "quiet library near the harbour".split()
# FLORES-200 sentences (SIB-200, CC BY-SA 4.0); the Thai ones have no punctuation of their own.
THA_A = "หากคุณต้องการเรียนรู้ที่จะขว้างบูมเมอแรงให้กลับมาที่มือของคุณ ตรวจสอบให้แน่ใจว่าคุณมีบูมเมอแรงที่เหมาะสมสำหรับการกลับมา"
THA_B = "นครวาติกันมีประชากรอยู่ราว 800 คน นับเป็นประเทศเอกราชที่เล็กที่สุดและมีประชากรน้อยที่สุดในโลก"
ZHO = "开始旅行写作最简单的方法就是在一个资深旅行博客网站上磨练你的技能"
for words in (IND20, ENG20, SHARE20):
    assert len(words) == 20 and len(set(words)) == 20


def chars(text: str) -> int:
    return len("".join(text.split()))


ITEMS = [
    Item("xsum", "ind", "1", ", ".join([" ".join(IND20[:6]), " ".join(IND20[6:])]) + "."),
    Item("xsum", "eng", "near12", " ".join(ENG20).capitalize() + "."),
    Item("xsum", "eng", "partial", " ".join(SHARE20) + "!"),
    Item("xsum", "eng", "short", " ".join(SHORT6).title() + "?"),
    Item("thai_qa", "tha", "A", THA_A),
    Item("thai_qa", "tha", "B", THA_B),
    Item("thai_qa", "zho", "A", ZHO + "。"),
]
# By construction: distinct n-grams of each item, and the hits of each planted document.
N_GRAMS = {"1": 8, "near12": 8, "partial": 8, "short": 1, "A/tha": chars(THA_A) - 72 + 1,
           "B/tha": chars(THA_B) - 72 + 1, "A/zho": len(ZHO) - 23 + 1}
PLANTED = {  # doc_id → (item key, hits)
    "ind-planted": (("xsum", "ind", "1"), 8),
    "eng-partial14": (("xsum", "eng", "partial"), 2),
    "eng-short": (("xsum", "eng", "short"), 1),
    "tha-planted": (("thai_qa", "tha", "A"), chars(THA_A) - 72 + 1),
    "zho-planted": (("thai_qa", "zho", "A"), len(ZHO) - 23 + 1),
}

LATIN = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike oscar papa quebec".split()
THAI_WORDS = ["บ้าน", "แมว", "น้ำ", "ฟ้า", "ดิน", "ลม", "ไฟ", "ต้นไม้", "ภูเขา", "ทะเล", "เมฆ", "ดาว"]
HAN = list("山水日月星云风雨花草树木")


def filler(rng: random.Random, lang: str, n: int) -> str:
    if lang == "tha":
        return " ".join("".join(rng.choices(THAI_WORDS, k=6)) for _ in range(n // 6))
    if lang == "zho":
        return "".join(rng.choices(HAN, k=n))
    return " ".join(rng.choices(LATIN, k=n))


def table_rows() -> list[tuple[str, str, str, str]]:
    rng = random.Random(7)
    rows = [(f"{lang}-{i:02d}", lang, "cc", filler(rng, lang, 60)) for lang in ("eng", "ind", "tha", "zho")
            for i in range(10)]
    bare_b = "".join(ch for ch in THA_B if unicodedata.category(ch) != "Mn")
    rows += [
        ("ind-planted", "ind", "cc", "Berita lain pagi ini. " + " ".join(IND20[:10]).upper() + "! "
         + " ".join(IND20[10:]).title() + " -- Lalu cerita lain."),
        ("eng-near12", "eng", "cc", "Unrelated opening words here " + " ".join(ENG20[3:15]) + " and then other things"),
        ("eng-partial14", "eng", "cc", "Reported today: " + " ".join(SHARE20[:14]) + ". Nothing else."),
        ("eng-short", "eng", "wiki", "We met at the QUIET library, near the harbour; then left."),
        ("eng-short5", "eng", "wiki", "a quiet library near the station"),
        ("tha-planted", "tha", "cc", "ข่าวต่างประเทศวันนี้ " + THA_A.replace(" ", ", “") + "” จบข่าว ขอบคุณครับ"),
        ("tha-marks", "tha", "cc", "เรื่องเล่า " + bare_b + " จบ"),
        ("zho-planted", "zho", "cc", "新闻：" + ZHO[:10] + "，" + ZHO[10:] + "！其他内容"),
    ]
    return rows


def write(spark, lake_dir, rows, mode="error"):
    lake.write_table(spark.createDataFrame(rows, SCHEMA), lake_dir, DOCS, mode=mode)


def audit(spark, lake_dir, cfg=ContaminationConfig(), **kw):
    plan = plan_audit(spark, lake_dir, ITEMS, cfg, **kw)
    versions = commit_plan(lake_dir, plan)
    return plan, versions


def rows_of(lake_dir, version=None):
    out = lake.read_arrow(lake_dir, CONTAMINATION).to_pylist()
    return [r for r in out if version is None or r["version"] == version]


@pytest.fixture(scope="module")
def audited(spark, tmp_path_factory):
    """docs_curated v0 without the Indonesian plant, v1 with everything; audited at v1, then v0."""
    lake_dir = str(tmp_path_factory.mktemp("contamination") / "lake")
    rows = table_rows()
    write(spark, lake_dir, [r for r in rows if r[0] != "ind-planted"])
    write(spark, lake_dir, rows, mode="overwrite")
    first, _ = audit(spark, lake_dir)
    return lake_dir, first


def test_planted_items_are_found_with_the_hits_their_construction_implies(audited):
    lake_dir, plan = audited
    rows = rows_of(lake_dir, version=1)
    pairs = {r["doc_id"]: ((r["task"], r["lang"], r["item_id"]), r["hits"], r["share"]) for r in rows if r["doc_id"]}
    expect = {doc: (key, hits, pytest.approx(hits / N_GRAMS[key[2] if key[0] == "xsum" else f"{key[2]}/{key[1]}"]))
              for doc, (key, hits) in PLANTED.items()}
    assert pairs == expect
    assert pairs["tha-planted"][2] == 1.0 and pairs["ind-planted"][2] == 1.0 and pairs["zho-planted"][2] == 1.0
    items = {(r["task"], r["lang"], r["item_id"]): r for r in rows if r["doc_id"] is None}
    assert len(items) == len(ITEMS)  # one row per item, hit or not
    for key, r in items.items():
        assert r["item_ngrams"] == N_GRAMS[key[2] if key[0] == "xsum" else f"{key[2]}/{key[1]}"]
        assert (r["table"], r["version"], r["share_threshold"]) == (DOCS, 1, 0.7)
    assert {k for k, r in items.items() if r["contaminated_any"]} == {key for key, _ in PLANTED.values()}
    assert items[("thai_qa", "tha", "A")]["unit"] == "char" and items[("thai_qa", "tha", "A")]["n"] == 72
    assert items[("xsum", "eng", "short")]["n"] == 5 and items[("xsum", "ind", "1")]["n"] == 13
    assert plan.summary["contamination"]["xsum"]["eng"] == {"items": 3, "contaminated_any": 2,
                                                            "contaminated_share": 1}


def test_near_misses_are_not_flagged(audited):
    lake_dir, _ = audited
    items = {(r["task"], r["lang"], r["item_id"]): r for r in rows_of(lake_dir, 1) if r["doc_id"] is None}
    near = items[("xsum", "eng", "near12")]  # 12 consecutive words in common, no 13
    assert (near["hits"], near["contaminated_any"]) == (0, False)
    marks = items[("thai_qa", "tha", "B")]  # the same Thai text without its vowel and tone marks
    assert (marks["hits"], marks["contaminated_any"]) == (0, False)
    assert not any(r["doc_id"] in ("eng-near12", "tha-marks", "eng-short5") for r in rows_of(lake_dir))


def test_the_share_verdict_differs_from_any_hit(audited):
    lake_dir, _ = audited
    items = {(r["task"], r["lang"], r["item_id"]): r for r in rows_of(lake_dir, 1) if r["doc_id"] is None}
    partial = items[("xsum", "eng", "partial")]  # 14 of 20 words: 2 of 8 13-grams
    assert (partial["hits"], partial["share"]) == (2, 0.25)
    assert partial["contaminated_any"] is True and partial["contaminated_share"] is False
    whole = items[("xsum", "ind", "1")]
    assert whole["contaminated_any"] is True and whole["contaminated_share"] is True


def test_a_rerun_gives_the_same_rows_and_input_version_pins(spark, audited):
    lake_dir, _ = audited

    def stable(rows):
        return sorted((tuple((k, v) for k, v in sorted(r.items()) if k != "audit_run_id") for r in rows), key=repr)

    before = rows_of(lake_dir, 1)
    audit(spark, lake_dir)
    assert stable(rows_of(lake_dir, 1)) == stable(before)  # replaced, not appended
    plan, _ = audit(spark, lake_dir, input_version=0)
    assert plan.inputs == {DOCS: 0}
    v0 = {(r["task"], r["lang"], r["item_id"]): r for r in rows_of(lake_dir, 0) if r["doc_id"] is None}
    assert v0[("xsum", "ind", "1")]["hits"] == 0 and v0[("thai_qa", "tha", "A")]["hits"] == N_GRAMS["A/tha"]
    assert stable(rows_of(lake_dir, 1)) == stable(before)  # the v1 audit is carried over
    v = verdict(lake_dir, DOCS, 0)
    assert v["tasks"]["xsum"]["ind"] == {"items": 1, "contaminated_any": 0, "contaminated_share": 0,
                                         "share_threshold": 0.7, "n": 13, "unit": "word",
                                         "audit_run_id": v0[("xsum", "ind", "1")]["audit_run_id"]}
    v1 = verdict(lake_dir, DOCS, 1)
    assert v1["tasks"]["xsum"]["ind"]["contaminated_any"] == 1
    assert (v1["items"], v1["contaminated"], v1["contaminated_any"], v1["contaminated_share"]) == (7, 5, 5, 4)
    assert verdict(lake_dir, DOCS, 1)["tasks"]["thai_qa"]["tha"]["items"] == 2
    assert verdict(lake_dir, DOCS, 7) is None and verdict(lake_dir, "docs_scored", 1) is None

    # An audit owns (table, version, task, lang): auditing one eng item of xsum replaces xsum/eng only.
    v0_before, v1_before = rows_of(lake_dir, 0), rows_of(lake_dir, 1)
    short = next(i for i in ITEMS if i.id == "short")
    commit_plan(lake_dir, plan_audit(spark, lake_dir, [short]))
    after = rows_of(lake_dir, 1)
    assert sorted((r["item_id"], r["doc_id"] or "") for r in after if (r["task"], r["lang"]) == ("xsum", "eng")) == [
        ("short", ""), ("short", "eng-short")]
    others = [r for r in v1_before if (r["task"], r["lang"]) != ("xsum", "eng")]
    assert stable([r for r in after if (r["task"], r["lang"]) != ("xsum", "eng")]) == stable(others)
    assert stable(rows_of(lake_dir, 0)) == stable(v0_before)


def test_the_share_rule_condemns_only_documents_of_share_contaminated_items(spark, audited):
    lake_dir, _ = audited
    before = lake.table_version(lake_dir, DOCS)
    plan = plan_audit(spark, lake_dir, ITEMS, ContaminationConfig(drop_rule="share"), decontaminate=True)
    try:
        assert plan.stage == "decontaminate.docs_curated"
        assert plan.counts.dropped == 4  # not eng-partial14: its item shares only 25% of its n-grams
        drops = next(o for o in plan.outputs if o.table == "drops").df
        assert sorted(r.doc_id for r in drops.collect()) == sorted(set(PLANTED) - {"eng-partial14"})
    finally:
        plan.release()
    assert lake.table_version(lake_dir, DOCS) == before  # a plan writes nothing


def test_bad_input_gets_a_clear_error(spark, audited, tmp_path):
    lake_dir, _ = audited
    bad = tmp_path / "items.jsonl"
    bad.write_text('{"task": "t", "lang": "eng", "id": 1, "text": "fine"}\n\n{"task": "t", "lang": "eng", "id": 2,\n')
    with pytest.raises(ItemsError, match=rf"{bad}:3: not a JSON object"):
        read_items(bad)
    bad.write_text('{"task": "t", "lang": "eng", "id": 1, "text": "fine"}\n{"task": "t", "id": 2, "text": "x"}\n')
    with pytest.raises(ItemsError, match=rf"{bad}:2: item is missing lang"):
        read_items(bad)
    bad.write_text("\n\n")
    with pytest.raises(ItemsError, match="holds no items"):
        read_items(bad)
    bad.write_text('{"task": "t", "lang": "eng", "id": "1", "text": "a"}\n{"task": "t", "lang": "en", "id": "1", '
                   '"text": "b"}\n')
    with pytest.raises(ItemsError, match=r":2: item t/eng/1 repeats .*:1"):
        read_items(bad)
    bad.write_text('{"task": "t", "lang": "tha", "id": "1", "text": "?!"}\n')
    with pytest.raises(ItemsError, match="no letters or digits"):
        read_items(bad)
    with pytest.raises(TableNotFoundError, match="no Delta table 'docs_scored'"):
        plan_audit(spark, lake_dir, ITEMS, ContaminationConfig(table="docs_scored"))
    with pytest.raises(TableNotFoundError, match="has no version 9"):
        plan_audit(spark, lake_dir, ITEMS, input_version=9)
    with pytest.raises(ConfigError, match="v0 is not the latest"):
        plan_audit(spark, lake_dir, ITEMS, input_version=0, decontaminate=True)
    with pytest.raises(ConfigError, match="share_threshold"):
        ContaminationConfig(share_threshold=0)
    with pytest.raises(ConfigError, match="char_ngram.eng"):
        ContaminationConfig(char_ngram={"eng": 10})
    assert verdict(str(tmp_path / "empty-lake"), DOCS, 0) is None


def test_the_job_decontaminates_through_its_entry_point(spark, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    from data_engine import tracking
    from jobs.contamination import main

    lake_dir = str(tmp_path / "lake")
    rows = table_rows()
    write(spark, lake_dir, rows)
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"task": i.task, "lang": i.lang, "id": i.id, "text": i.text},
                                        ensure_ascii=False) + "\n" for i in ITEMS), encoding="utf-8")
    assert main(["--lake", lake_dir, "--items", str(items), "--decontaminate"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["status"] == "ok" and summary["job"] == "contamination"
    assert (summary["in"], summary["kept"], summary["dropped"]) == (len(rows), len(rows) - 5, 5)
    assert summary["tables"] == {CONTAMINATION: 0, "drops": 0, DOCS: 1}
    assert summary["contamination"]["thai_qa"]["tha"] == {"items": 2, "contaminated_any": 1, "contaminated_share": 1}
    drops = {r["doc_id"]: r for r in lake.read_arrow(lake_dir, "drops").to_pylist()}
    assert set(drops) == set(PLANTED)
    assert {r["stage"] for r in drops.values()} == {"decontaminate"}
    assert drops["tha-planted"]["reason"] == "contaminated:thai_qa/tha/A"
    assert json.loads(drops["ind-planted"]["detail"])["items"] == [
        {"task": "xsum", "lang": "ind", "id": "1", "hits": 8, "share": 1.0}]
    kept = {r["doc_id"] for r in lake.read_arrow(lake_dir, DOCS).to_pylist()}
    assert kept == {r[0] for r in rows} - set(PLANTED)
    metrics = MlflowClient(tracking.tracking_uri(tmp_path)).get_run(summary["mlflow_run_id"]).data.metrics
    assert metrics["contaminated.thai_qa.tha"] == 1 and metrics["contaminated_share.xsum.eng"] == 1
    assert metrics["items.xsum.eng"] == 3 and metrics["dropped"] == 5

    # The new version is clean; auditing it again drops nothing and leaves the table as it is.
    assert main(["--lake", lake_dir, "--items", str(items), "--decontaminate"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["audited"] == {"table": DOCS, "version": 1} and again["contaminated_any"] == 0
    assert again["tables"] == {CONTAMINATION: 1} and again["dropped"] == 0
    assert verdict(lake_dir, DOCS, 0)["tasks"]["xsum"]["eng"]["contaminated_any"] == 2
    assert verdict(lake_dir, DOCS, 1)["tasks"]["xsum"]["eng"]["contaminated_any"] == 0

    items.write_text('{"task": "t", "lang": "eng", "id": 1}\n')
    assert main(["--lake", lake_dir, "--items", str(items)]) == 1
    out = capsys.readouterr()
    assert f"sailyard contamination: error: {items}:1: item is missing text" in out.err
    assert json.loads(out.out.strip().splitlines()[-1])["status"] == "error"
