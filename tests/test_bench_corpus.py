"""The near-dedup benchmark corpus (bench/corpus.py): reproducible, planted copies near duplicates, unrelated
pages not, spaceless scripts without spaces, and its scores on hand-made cases.

Whether two pages are near duplicates is decided here by a reference shingler written for this test (word
5-grams of `\\w+` runs; character 5-grams of letters and marks for the spaceless scripts), not by
data_engine/dedup/shingles.py: the benchmark scores that code, so its truth must not come from it.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import random
import re
import statistics
import sys
import unicodedata
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPACELESS = {"tha", "lao", "khm", "mya", "zho"}  # written out here, not imported: Thai, Lao, Khmer, Burmese, Chinese


def _load_corpus_module():
    spec = importlib.util.spec_from_file_location("bench_corpus", ROOT / "bench" / "corpus.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_corpus"] = module  # before exec: dataclasses and the fork pool look it up by name
    spec.loader.exec_module(module)
    return module


corpus = _load_corpus_module()


def shingles(text: str, lang: str, n: int = 5, mode: str | None = None) -> set[str]:
    text = unicodedata.normalize("NFC", text).lower()
    if (mode or ("char" if lang in SPACELESS else "word")) == "char":
        chars = [c for c in text if c.isalnum() or unicodedata.category(c).startswith("M")]
        return {"".join(chars[i:i + n]) for i in range(max(1, len(chars) - n + 1))}
    words = re.findall(r"\w+", text)
    return {" ".join(words[i:i + n]) for i in range(max(1, len(words) - n + 1))}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def _read(out: Path) -> tuple[dict[str, dict], list[dict]]:
    docs = {}
    for path in sorted((out / "docs").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            docs[rec["doc_id"]] = rec
    truth = [json.loads(line) for line in (out / "truth.jsonl").read_text().splitlines()]
    return docs, truth


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict, dict[str, dict], list[dict]]:
    """900 pages with a tenth of them originals: ~90 clusters, ~250 copies over all 15 languages."""
    out = tmp_path_factory.mktemp("corpus")
    manifest = corpus.write_corpus(out, 900, seed=5, files=3, cluster_share=0.1, workers=1)
    docs, truth = _read(out)
    return out, manifest, docs, truth


def test_same_seed_same_bytes_in_any_number_of_processes(tmp_path: Path) -> None:
    a = corpus.write_corpus(tmp_path / "a", 240, seed=3, files=4, workers=1)
    b = corpus.write_corpus(tmp_path / "b", 240, seed=3, files=4, workers=2)
    c = corpus.write_corpus(tmp_path / "c", 240, seed=4, files=4, workers=1)
    for name in ("truth.jsonl", "langs.tsv", *(f"docs/part-{f:04d}.jsonl" for f in range(4))):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert [p["sha256"] for p in a["parts"]] == [p["sha256"] for p in b["parts"]]
    assert [p["sha256"] for p in a["parts"]] != [p["sha256"] for p in c["parts"]]


def test_records_look_like_a_web_crawl(built) -> None:
    out, manifest, docs, truth = built
    assert len(docs) == manifest["docs"] == 900
    assert {d["lang"] for d in docs.values()} == SPACELESS | {"ind", "vie", "zsm", "tgl", "jav", "sun", "ceb",
                                                             "war", "ilo", "eng"}
    for rec in docs.values():
        assert set(rec) <= {"doc_id", "url", "lang", "text"} and rec["text"]
        assert rec.get("url", "https://").startswith(("https://", "http://"))
    sizes = [len(d["text"].encode()) for d in docs.values()]
    assert 2500 < statistics.mean(sizes) < 3800 and min(sizes) >= 450 and max(sizes) <= 11000
    assert 0 < sum("url" not in d for d in docs.values()) < 0.15 * len(docs)
    # site boilerplate: the first line (site name and menu) is shared by pages of one site
    first_lines = defaultdict(int)
    for d in docs.values():
        first_lines[d["text"].splitlines()[0]] += 1
    assert max(first_lines.values()) >= 5
    # the truth names clustered documents only, each cluster one original and 1-6 copies
    clusters = defaultdict(list)
    for t in truth:
        assert docs[t["doc_id"]]["lang"] == t["lang"]
        clusters[t["cluster_id"]].append(t)
    assert len(clusters) == manifest["clusters"] == 90
    assert all(sum(m["original"] for m in ms) == 1 and 2 <= len(ms) <= 7 for ms in clusters.values())
    langs = dict(line.split("\t") for line in (out / "langs.tsv").read_text().splitlines())
    assert langs == {d: rec["lang"] for d, rec in docs.items()}


def test_spaceless_scripts_have_no_spaces(built) -> None:
    _, _, docs, _ = built
    spaceless = [d for d in docs.values() if d["lang"] in SPACELESS]
    assert len(spaceless) > 200
    for d in spaceless:
        assert not any(c.isspace() and c not in "\r\n" for c in d["text"]), d["doc_id"]
    others = [d for d in docs.values() if d["lang"] not in SPACELESS]
    assert all(d["text"].count(" ") > 30 for d in others)


def test_planted_copies_are_near_duplicates_of_their_original(built) -> None:
    _, _, docs, truth = built
    by_cluster = defaultdict(list)
    for t in truth:
        by_cluster[t["cluster_id"]].append(t)
    word_or_char, char = [], []
    changed = 0
    for members in by_cluster.values():
        original = docs[next(m["doc_id"] for m in members if m["original"])]
        for m in members:
            if m["original"]:
                continue
            copy = docs[m["doc_id"]]
            changed += copy["text"] != original["text"]
            j = jaccard(shingles(original["text"], original["lang"]), shingles(copy["text"], copy["lang"]))
            word_or_char.append(j)
            char.append(jaccard(shingles(original["text"], "", mode="char"), shingles(copy["text"], "", mode="char")))
            assert j >= 0.85, (m["doc_id"], original["lang"], round(j, 3))
    assert len(word_or_char) > 150 and changed == len(word_or_char)
    assert min(char) >= 0.85 and statistics.median(word_or_char) >= 0.92


def test_unrelated_pages_are_not_near_duplicates(built) -> None:
    _, _, docs, truth = built
    cluster_of = {t["doc_id"]: t["cluster_id"] for t in truth}
    by_lang = defaultdict(list)
    for d in docs.values():
        by_lang[d["lang"]].append(d)
    rng = random.Random(0)
    worst = 0.0
    for lang, pages in by_lang.items():
        sample = rng.sample(pages, min(25, len(pages)))
        sets = [shingles(p["text"], lang) for p in sample]
        for (a, sa), (b, sb) in itertools.combinations(zip(sample, sets, strict=True), 2):
            if cluster_of.get(a["doc_id"]) is None or cluster_of.get(a["doc_id"]) != cluster_of.get(b["doc_id"]):
                worst = max(worst, jaccard(sa, sb))
    assert worst < 0.5


# --- Scores on hand-made cases ----------------------------------------------------------------------

TRUTH = {"a1": "c1", "a2": "c1", "a3": "c1", "b1": "c2", "b2": "c2"}  # 3 + 1 true pairs
LANGS = {"a1": "eng", "a2": "eng", "a3": "eng", "x": "eng", "b1": "tha", "b2": "tha", "y": "tha"}


def test_pair_scores_perfect_false_merge_missed_copy() -> None:
    perfect = {"a1": "p", "a2": "p", "a3": "p", "b1": "q", "b2": "q"}
    s = corpus.pair_scores(perfect, TRUTH, LANGS)
    assert (s.precision, s.recall, s.f1, s.tp, s.fp, s.fn) == (1.0, 1.0, 1.0, 4, 0, 0)

    merged = {**perfect, "x": "p"}  # an unrelated page merged into c1: 3 wrong pairs
    s = corpus.pair_scores(merged, TRUTH, LANGS)
    assert (s.tp, s.fp, s.fn) == (4, 3, 0)
    assert s.precision == pytest.approx(4 / 7) and s.recall == 1.0 and s.f1 == pytest.approx(8 / 11)

    missed = {k: v for k, v in perfect.items() if k != "a3"}  # a copy left alone: 2 pairs missed
    s = corpus.pair_scores(missed, TRUTH, LANGS)
    assert (s.precision, s.recall, s.tp, s.fn) == (1.0, 0.5, 2, 2) and s.f1 == pytest.approx(2 / 3)

    by_lang = corpus.pair_scores_by_lang(missed, TRUTH, LANGS)
    assert by_lang["eng"].recall == pytest.approx(1 / 3) and by_lang["tha"].f1 == 1.0
    run = corpus.score_run(missed, ["a2", "b2"], corpus.Truth(TRUTH, LANGS))
    assert run["worst_lang"] == "eng" and run["worst_lang_pair_f1"] == pytest.approx(0.5)


def test_removal_scores_perfect_false_merge_missed_copy_and_excess() -> None:
    s = corpus.removal_scores(["a2", "a3", "b2"], TRUTH)
    assert (s.precision, s.recall, s.f1, s.tp, s.fp, s.fn) == (1.0, 1.0, 1.0, 3, 0, 0)
    s = corpus.removal_scores(["a2", "a3", "b2", "x"], TRUTH)  # an unrelated page removed
    assert (s.tp, s.fp, s.fn) == (3, 1, 0) and s.precision == 0.75 and s.recall == 1.0
    s = corpus.removal_scores(["a2", "b2"], TRUTH)  # a copy kept
    assert (s.tp, s.fp, s.fn) == (2, 0, 1) and s.recall == pytest.approx(2 / 3)
    s = corpus.removal_scores(["a1", "a2", "a3"], TRUTH)  # the whole of c1 removed, c2 untouched
    assert (s.tp, s.fp, s.fn) == (2, 1, 1)
    assert s.precision == pytest.approx(2 / 3) and s.recall == pytest.approx(2 / 3)
    s = corpus.removal_scores([], TRUTH)
    assert (s.tp, s.fn, s.recall, s.f1) == (0, 3, 0.0, 0.0)
