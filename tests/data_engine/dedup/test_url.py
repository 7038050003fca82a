"""URL normalisation and URL dedup: spellings of one page keep the copy with the most content."""

from __future__ import annotations

import pytest

from data_engine.dedup.config import UrlDedupConfig
from data_engine.dedup.url import dedup_url, normalize_url


@pytest.mark.parametrize("variant", [
    "https://news.example.org/a/b", "http://news.example.org/a/b", "https://www.news.example.org/a/b",
    "https://NEWS.Example.ORG/a/b/", "https://news.example.org:443/a/b", "http://news.example.org:80/a/b",
    "https://news.example.org/a/b#comments", "https://news.example.org/a/b?utm_source=x&utm_medium=y",
    "https://news.example.org/a/b?fbclid=abc", "https://news.example.org/a//b", "news.example.org/a/b",
    "//news.example.org/a/b", "https://news.example.org./a/b",
])
def test_spellings_of_one_page_share_a_key(variant):
    assert normalize_url(variant) == "news.example.org/a/b"


@pytest.mark.parametrize(("a", "b"), [
    ("https://x.org/a?id=1", "https://x.org/a?id=2"),  # meaningful parameters count
    ("https://x.org/A", "https://x.org/a"),  # path case counts
    ("https://x.org:8080/a", "https://x.org/a"),  # a non-default port counts
    ("https://a.x.org/p", "https://b.x.org/p"),
])
def test_different_pages_keep_different_keys(a, b):
    assert normalize_url(a) != normalize_url(b)


def test_query_order_percent_case_and_unicode_paths():
    assert normalize_url("https://x.org/p?b=2&a=1&utm_campaign=z") == "x.org/p?a=1&b=2"
    thai = normalize_url("https://th.example.org/ข่าว?id=5")
    assert thai == normalize_url("https://th.example.org/%e0%b8%82%e0%b9%88%e0%b8%b2%e0%b8%a7?id=5")
    assert normalize_url("https://x.org/p?session=1", extra_tracking=frozenset({"session"})) == "x.org/p"
    for bad in (None, "", "not a url", "ftp://x.org/a", "https://[::1", "mailto:a@b.org"):
        assert normalize_url(bad) is None


def test_dedup_url_keeps_most_content_and_leaves_url_less_docs_alone(spark):
    rows = [("a1", "tha", "https://th.example.org/news/1", "ข่าว ก"),
            ("a2", "tha", "http://www.th.example.org/news/1/?utm_source=fb", "ข่าว ก และข้อความเพิ่มเติม"),
            ("a3", "tha", "https://th.example.org/news/1#top", "ข่าว"),
            ("b1", "vie", "https://vi.example.org/x?id=1", "Xin chào"),
            ("b2", "vie", "https://vi.example.org/x?id=2", "Xin chào"),
            ("n1", "eng", None, "same"), ("n2", "eng", None, "same"), ("n3", "eng", "garbage", "same")]
    out = dedup_url(spark.createDataFrame(rows, "doc_id string, lang string, url string, text string"))
    try:
        assert sorted(r.doc_id for r in out.kept.collect()) == ["a2", "b1", "b2", "n1", "n2", "n3"]
        dropped = {r.doc_id: (r.dup_of, r.stage, r.reason, r.cluster_id) for r in out.dropped.collect()}
        key = "th.example.org/news/1"
        assert dropped == {"a1": ("a2", "url", "url_duplicate", key), "a3": ("a2", "url", "url_duplicate", key)}
    finally:
        out.tagged.unpersist()
    custom = dedup_url(spark.createDataFrame([("x", "eng", "https://e.org/p?sid=1", "aa"),
                                              ("y", "eng", "https://e.org/p?sid=2", "a")],
                                             "doc_id string, lang string, url string, text string"),
                       UrlDedupConfig(extra_tracking_params=("SID",)))
    assert [r.doc_id for r in custom.dropped.collect()] == ["y"]
    custom.tagged.unpersist()
