"""A web-like corpus with planted near-duplicate clusters for the near-dedup benchmark, and its scores.

    .venv/bin/python bench/corpus.py --docs 100000 --out /tmp/corpus-100k [--seed 17] [--files 8]

Why generated: issue 17's outside user measured the data engine on a web-like corpus it had never
seen (100,000 pages, ~330 MB of JSONL, 15 languages, 3,151 planted clusters). This builds one of that
shape offline and byte for byte reproducibly (same seed and size, same files), so the side-by-side
benchmark (`bench/dedup.py`) can be rerun anywhere and scored against a known truth.

A page (`Page`):

- **Text**: a cut-up of its language's real text (the UDHR training sections shipped in
  `data_engine/resources/udhr`): runs of ~4 consecutive words (grapheme clusters for Thai, Lao,
  Khmer, Burmese and Chinese, which are written here without any spaces) from random places, in
  paragraph lines. Letters, words, word frequencies and short phrases are real, but two pages almost
  never share a 5-gram: ~10 KB of real text per language cannot give 6,000 different pages of whole
  sentences, and pages of shared sentences would be near duplicates of each other, which unrelated web
  pages are not. Body lengths are log-normal (mean ~2.9 KB, 0.45-9.7 KB) plus ~0.1-0.3 KB of
  boilerplate.
- **Site boilerplate**: every page belongs to a site of its language (Zipf-sized, ~30 pages a site on
  average) whose header (site name and navigation) and footer (copyright, links) lines it carries, plus
  a date line.
- **URL**: `https://<site>/<section>/<yyyy>/<mm>/<slug>-<n>.html`; 4% of pages have none.

Planted clusters: 3.15% of the documents are originals, each with 1-6 edited copies (mean 2.8). A copy
gets 1-3 of: word (or character) substitutions, typos, a run of text inserted, a run removed, its
boilerplate changed (date or footer line, or re-hosted under another site's boilerplate and URL when the
page is long enough for that to be a light edit), whitespace changed (spaces, blank lines, CRLF). The
edits are sized against the page (a damage budget of 1-4% of its shingles) so every copy stays a near
duplicate of its original: Jaccard of word and character 5-gram sets ~0.9 and up.

On disk (`write_corpus`): `docs/part-0000.jsonl` … (fields `doc_id`, `url`, `lang`, `text`; `url`
absent where a page has none), `truth.jsonl` (`doc_id`, `cluster_id`, `lang`, `original` for every
clustered document), `langs.tsv` (`doc_id`, `lang` of every document, for per-language scores) and
`manifest.json` (parameters, counts, SHA-256 of each file).

Scores (`pair_scores`, `pair_scores_by_lang`, `removal_scores`, `score_run`): pair precision/recall/F1
of "same cluster" over all documents and per language, and removal P/R/F1 (a planted cluster of c
documents should lose exactly c-1).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import re
import sys
import time
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from data_engine.langs import LANGS, SPACELESS  # noqa: E402
from data_engine.sample.corpus import load_udhr  # noqa: E402

VERSION = 1  # bump when the bytes a seed gives change
CLUSTER_SHARE = 0.0315  # originals per document: 3,150 clusters in 100,000 (issue 17 had 3,151)
COPIES = np.array([1, 2, 3, 4, 5, 6])
COPY_WEIGHTS = np.array([0.30, 0.22, 0.17, 0.13, 0.10, 0.08])
RUN_MEAN = 4.0  # consecutive real units (words, or grapheme clusters) per run of the cut-up
BODY_MEAN_BYTES, BODY_SIGMA, BODY_MIN, BODY_MAX = 2950, 0.6, 450, 9700
NO_URL_SHARE = 0.04
PAGES_PER_SITE = 30
EDIT_KINDS = ("substitute", "typo", "insert", "remove", "boilerplate", "whitespace")
EDIT_WEIGHTS = np.array([0.22, 0.22, 0.16, 0.16, 0.12, 0.12])

_TLDS = {"ind": ["co.id", "id", "com"], "vie": ["vn", "com.vn", "com"], "tha": ["co.th", "in.th", "com"],
         "zsm": ["my", "com.my", "com"], "mya": ["com.mm", "mm", "com"], "tgl": ["ph", "com.ph", "com"],
         "khm": ["com.kh", "kh", "com"], "lao": ["la", "com.la", "com"], "jav": ["id", "or.id", "com"],
         "sun": ["id", "web.id", "com"], "ceb": ["ph", "com.ph", "net"], "war": ["ph", "net", "org"],
         "ilo": ["ph", "com.ph", "org"], "eng": ["com", "org", "net"], "zho": ["cn", "com.cn", "com"]}
_LINE_END = {"zho": "。", "mya": "။", "khm": "។", "tha": "", "lao": ""}  # the rest end a line with "."
_SECTIONS = ["news", "local", "world", "life", "tech", "sport", "opinion", "culture", "health", "business"]
_PHRASE_BREAK = re.compile(r"[\s,.;:!?()\[\]“”、，。；：！？「」\u104a\u104b\u17d4\u17d5]+")
_JOINERS = frozenset("\u1039\u17d2\u200c\u200d")  # Burmese virama, Khmer coeng, ZWNJ, ZWJ: glue the next char


def _spaceless(lang: str) -> bool:
    return lang in SPACELESS


def graphemes(text: str) -> list[str]:
    """Text cut into user-perceived characters: a base with its combining marks, a Burmese/Khmer stack
    glued by virama/coeng. Edits and cut-ups of spaceless text work on these, so they never leave a
    mark without its base."""
    out: list[str] = []
    for ch in text:
        if out and (unicodedata.category(ch)[0] == "M" or out[-1][-1] in _JOINERS or ch in _JOINERS):
            out[-1] += ch
        else:
            out.append(ch)
    return out


@dataclass(frozen=True)
class _Pool:
    """A language's real text as units (words, or grapheme clusters for spaceless scripts)."""

    lang: str
    units: np.ndarray  # object array of str
    nbytes: np.ndarray  # UTF-8 bytes of each unit plus its separator
    mean_bytes: float
    sep: str
    words: tuple[str, ...]  # real words (short phrases in spaceless scripts) for boilerplate lines


@cache
def _pool(lang: str) -> _Pool:
    paras = [p for section in load_udhr(lang) for p in section]
    if _spaceless(lang):
        units, sep = [g for p in paras for g in graphemes("".join(p.split()))], ""
        # the UDHR's phrases between spaces and punctuation, the short ones: real words for menus
        words = tuple(sorted({c for p in paras for c in _PHRASE_BREAK.split(p) if 2 <= len(graphemes(c)) <= 8}))
    else:
        units, sep = [w for p in paras for w in p.split()], " "
        words = tuple(sorted({w for u in units for w in [u.strip(".,;:!?()«»\"'“”")]
                              if len(w) >= 3 and w.isalpha()}))
    nbytes = np.array([len(u.encode()) + len(sep) for u in units], dtype=np.int64)
    return _Pool(lang, np.array(units, dtype=object), nbytes, float(nbytes.mean()), sep, words)


def _cut_up(rng: np.random.Generator, pool: _Pool, target_bytes: int) -> list[str]:
    """Units for about `target_bytes` of text: runs of consecutive real units from random places."""
    n = len(pool.units)
    need = int(target_bytes / pool.mean_bytes / RUN_MEAN * 1.2) + 4
    parts, got = [], 0
    while got < target_bytes:
        lengths = np.minimum(rng.geometric(1 / RUN_MEAN, need), n)
        starts = rng.integers(0, n - lengths + 1)
        offsets = np.cumsum(lengths) - lengths
        idx = np.repeat(starts - offsets, lengths) + np.arange(int(lengths.sum()))
        cum = got + np.cumsum(pool.nbytes[idx])
        cut = min(int(np.searchsorted(cum, target_bytes)) + 1, len(idx))
        parts.append(idx[:cut])
        got = int(cum[cut - 1])
    return pool.units[np.concatenate(parts)].tolist()


def _finish_line(lang: str, line: list[str]) -> list[str]:
    """Capitalise the first word and end the line like a sentence of the language."""
    if _spaceless(lang):
        end = _LINE_END[lang]
        return line + [end] if end and line[-1] != end else line
    line = [line[0][:1].upper() + line[0][1:], *line[1:]]
    if line[-1][-1:] not in ".!?":
        line[-1] = line[-1].rstrip(",;:") + "."
    return line


def _paragraphs(rng: np.random.Generator, lang: str, units: list[str]) -> list[list[str]]:
    lo, hi = (40, 260) if _spaceless(lang) else (15, 90)
    takes = rng.integers(lo, hi, size=len(units) // lo + 1).tolist()
    lines, i = [], 0
    while i < len(units):
        take = takes[len(lines)]
        if len(units) - (i + take) < lo // 2:  # no stub line at the end
            take = len(units) - i
        lines.append(_finish_line(lang, units[i:i + take]))
        i += take
    return lines


def _ascii(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower())


@dataclass(frozen=True)
class Site:
    """A web site of one language: its domain and the boilerplate lines every page of it carries."""

    lang: str
    domain: str
    name: str
    header: tuple[str, ...]
    footer: tuple[str, ...]
    sections: tuple[str, ...]


def _site(seed: int, lang: str, index: int) -> Site:
    rng = np.random.default_rng([seed, 3, LANGS.index(lang), index])
    pool = _pool(lang)
    words = pool.words
    if _spaceless(lang):
        name = "".join(rng.choice(words, int(rng.integers(1, 3))))
        nav = list(rng.choice(words, int(rng.integers(4, 8))))
        links = ["".join(rng.choice(words, int(rng.integers(1, 3)))) for _ in range(int(rng.integers(3, 6)))]
        slug = "".join(rng.choice(list("bcdfghjklmnprstvwz"), 3)) + "".join(rng.choice(list("aeiou"), 2))
        sep, space = "|", ""
    else:
        name = " ".join(w.capitalize() for w in rng.choice(words, int(rng.integers(1, 3))))
        nav = [w.capitalize() for w in rng.choice(words, int(rng.integers(4, 8)))]
        links = [" ".join(rng.choice(words, int(rng.integers(1, 3)))).capitalize()
                 for _ in range(int(rng.integers(3, 6)))]
        slug = _ascii(name) or "site"
        sep, space = " | ", " "
    domain = f"{slug}{int(rng.integers(2, 99)) if rng.random() < 0.5 else ''}.{rng.choice(_TLDS[lang])}"
    year = int(rng.integers(2015, 2026))
    header = (sep.join([name, *nav]),)
    footer = (f"©{space}{year}{space}{name}{space}{domain}", sep.join(links))
    fallback = rng.choice(_SECTIONS, len(nav), replace=False)  # URL paths of menus that have no ASCII
    sections = tuple(fallback[:4]) if _spaceless(lang) else \
        tuple(_ascii(n) or str(f) for n, f in zip(nav, fallback, strict=True))
    return Site(lang, domain, name, header, footer, sections)


@cache
def _sites(seed: int, lang: str, count: int) -> tuple[tuple[Site, ...], np.ndarray]:
    """The language's sites and the cumulative Zipf weights pages are assigned to them by."""
    weights = 1.0 / np.arange(1, count + 1) ** 0.9
    return tuple(_site(seed, lang, i) for i in range(count)), np.cumsum(weights / weights.sum())


@dataclass
class Page:
    """One web page: boilerplate around paragraph lines of units, rendered by `text()`."""

    lang: str
    site: Site
    url: str | None
    date: str
    body: list[list[str]]
    header: list[str] = field(default_factory=list)
    footer: list[str] = field(default_factory=list)

    def text(self) -> str:
        sep = "" if _spaceless(self.lang) else " "
        return "\n".join([*self.header, self.date, *(sep.join(line) for line in self.body), *self.footer])

    def units(self) -> int:
        """Body size in shingle units: words, or characters for spaceless text."""
        if _spaceless(self.lang):
            return sum(len(u) for line in self.body for u in line)
        return sum(len(line) for line in self.body)


def _url(rng: np.random.Generator, site: Site, body: list[list[str]], year: int, month: int) -> str:
    section = site.sections[int(rng.integers(len(site.sections)))]
    words = [_ascii(u) for u in body[0][:5]] if not _spaceless(site.lang) else []
    slug = "-".join(w for w in words if w)[:60] or "p"
    www = "www." if len(site.domain) % 2 else ""
    return f"https://{www}{site.domain}/{section}/{year}/{month:02d}/{slug}-{int(rng.integers(1000, 999999))}.html"


def make_page(seed: int, key: tuple[int, ...], lang: str, n_sites: int) -> Page:
    """The page `key` names (its own random stream, so any page is made alone, in any order)."""
    rng = np.random.default_rng([seed, *key])
    sites, cum = _sites(seed, lang, n_sites)
    site = sites[min(int(np.searchsorted(cum, rng.random())), len(sites) - 1)]
    mu = np.log(BODY_MEAN_BYTES) - BODY_SIGMA ** 2 / 2
    target = int(np.clip(rng.lognormal(mu, BODY_SIGMA), BODY_MIN, BODY_MAX))
    body = _paragraphs(rng, lang, _cut_up(rng, _pool(lang), target))
    year, month, day = int(rng.integers(2012, 2026)), int(rng.integers(1, 13)), int(rng.integers(1, 29))
    url = _url(rng, site, body, year, month) if rng.random() >= NO_URL_SHARE else None
    return Page(lang, site, url, f"{year}-{month:02d}-{day:02d}", body, list(site.header), list(site.footer))


# --- Edited copies ---------------------------------------------------------------------------------

def _unit_cost(lang: str) -> int:
    """Shingles one changed unit can break: 5 word 5-grams, or ~8 character 5-grams for a grapheme."""
    return 8 if _spaceless(lang) else 5


def _random_position(rng: np.random.Generator, body: list[list[str]]) -> tuple[int, int]:
    sizes = np.array([len(line) for line in body])
    flat = int(rng.integers(sizes.sum()))
    li = int(np.searchsorted(np.cumsum(sizes), flat, side="right"))
    return li, flat - int(sizes[:li].sum())


def _substitute(rng: np.random.Generator, page: Page, share: float) -> float:
    pool, cost = _pool(page.lang), _unit_cost(page.lang)
    k = max(1, int(share // cost))
    for _ in range(k):
        li, ui = _random_position(rng, page.body)
        old = page.body[li][ui]
        new = old
        while new == old:  # a substitution that changes nothing is no edit
            new = pool.units[int(rng.integers(len(pool.units)))]
        if not _spaceless(page.lang) and old[-1:] in ".,;:!?" and new[-1:] not in ".,;:!?":
            new += old[-1]  # keep the sentence's punctuation where it was
        page.body[li][ui] = new
    return k * cost


def _typo(rng: np.random.Generator, page: Page, share: float) -> float:
    cost = _unit_cost(page.lang)
    k = max(1, int(share // cost))
    for _ in range(k):
        li, ui = _random_position(rng, page.body)
        line = page.body[li]
        if _spaceless(page.lang):  # a grapheme dropped or two swapped (dropped where the swap would not show)
            j = ui + 1 if ui + 1 < len(line) else ui - 1
            if len(line) > 2 and (rng.random() < 0.5 or j < 0 or line[j] == line[ui]):
                del line[ui]
            elif j >= 0:
                line[ui], line[j] = line[j], line[ui]
            continue
        word = line[ui]
        if len(word) < 3:
            word = word + word[-1]
        else:
            i = int(rng.integers(len(word) - 1))
            kind = int(rng.integers(3))
            if kind == 0 and word[i] != word[i + 1]:
                word = word[:i] + word[i + 1] + word[i] + word[i + 2:]
            elif kind == 1:
                word = word[:i] + word[i + 1:]
            else:
                word = word[:i] + word[i] + word[i:]
        line[ui] = word
    return k * cost


def _run_units(lang: str, share: float) -> int:
    """Units of an inserted/removed run whose shingle damage fits `share` (a run of L breaks ~L+4)."""
    per = 1.5 if _spaceless(lang) else 1.0  # characters per grapheme
    return max(1, int((share - 4) / per))


def _insert(rng: np.random.Generator, page: Page, share: float) -> float:
    length = _run_units(page.lang, share)
    pool = _pool(page.lang)
    run = _cut_up(rng, pool, int(length * pool.mean_bytes))[:length]
    li = int(rng.integers(len(page.body)))
    if length >= (30 if _spaceless(page.lang) else 12):  # a sentence long enough is a line of its own
        page.body.insert(li, _finish_line(page.lang, run))
    else:
        pos = int(rng.integers(len(page.body[li]) + 1))
        page.body[li][pos:pos] = run
    return length * (1.5 if _spaceless(page.lang) else 1) + 4


def _remove(rng: np.random.Generator, page: Page, share: float) -> float:
    length = _run_units(page.lang, share)
    li = int(rng.integers(len(page.body)))
    line = page.body[li]
    if len(line) <= length and len(page.body) > 1:
        removed = len(line)
        del page.body[li]
    else:
        removed = min(length, len(line) - 1)
        start = int(rng.integers(len(line) - removed + 1))
        del line[start:start + removed]
    return removed * (1.5 if _spaceless(page.lang) else 1) + 4


def _boilerplate_units(page: Page) -> int:
    lines = [*page.header, *page.footer, page.date]
    if _spaceless(page.lang):
        return sum(len(x) for x in lines)
    return sum(len(re.findall(r"\w+", x)) for x in lines)


def _boilerplate(rng: np.random.Generator, page: Page, share: float, n_sites: int, seed: int) -> float:
    """Re-hosted under another site (when that is a light edit for this page), else a date or footer line
    changed."""
    bp = _boilerplate_units(page)
    sites, _ = _sites(seed, page.lang, n_sites)
    if share >= 2 * bp + 8 and len(sites) > 1:
        others = [s for s in sites if s.domain != page.site.domain]
        site = others[int(rng.integers(len(others)))]
        page.site, page.header, page.footer = site, list(site.header), list(site.footer)
        y, m = (int(x) for x in page.date.split("-")[:2])
        page.url = _url(rng, site, page.body, y, m)
        return 2 * bp + 8
    if rng.random() < 0.5:  # the day of the date line: one word, two digits
        y, m, d = (int(x) for x in page.date.split("-"))
        page.date = f"{y}-{m:02d}-{(d + int(rng.integers(1, 5)) - 1) % 28 + 1:02d}"
    else:  # the footer's copyright year
        page.footer[0] = re.sub(r"\d{4}", lambda x: str(int(x.group()) + 1), page.footer[0], count=1)
    return _min_cost("boilerplate", page.lang)


def _min_cost(kind: str, lang: str) -> float:
    """The fewest shingles an edit of this kind breaks: one unit changed, or a one-unit run, or one
    boilerplate word (a year's four digits in spaceless text)."""
    if kind in ("insert", "remove"):
        return 6 if _spaceless(lang) else 5
    return _unit_cost(lang)


def _respace(rng: np.random.Generator, text: str, lang: str) -> str:
    """Whitespace changed the way re-publishing changes it; spaceless pages get no spaces."""
    kinds = ["crlf", "blank"] if _spaceless(lang) else ["crlf", "blank", "spaces", "trailing"]
    kind = kinds[int(rng.integers(len(kinds)))]
    if kind == "crlf":
        return text.replace("\n", "\r\n")
    if kind == "blank":
        return text.replace("\n", "\n\n")
    lines = text.split("\n")
    if kind == "trailing":
        return "\n".join(line + " " * int(rng.integers(1, 3)) for line in lines)
    return "\n".join(line.replace(" ", "  ", int(rng.integers(1, 4))) for line in lines)


def _url_variant(rng: np.random.Generator, url: str | None, page: Page) -> str | None:
    if rng.random() < 0.05:
        return None
    if url is None:
        y, m = (int(x) for x in page.date.split("-")[:2])
        return _url(rng, page.site, page.body, y, m)
    kind = int(rng.integers(3))
    if kind == 0:
        return f"{url}?utm_source={rng.choice(['facebook', 'twitter', 'newsletter'])}&utm_medium=social"
    if kind == 1:
        return url.replace(".html", f"-{int(rng.integers(2, 9))}.html")
    return url.replace("https://", "http://m.", 1) if "://www." not in url else url.replace("://www.", "://m.", 1)


def make_copy(seed: int, original: Page, key: tuple[int, ...], n_sites: int) -> tuple[str, str | None]:
    """An edited copy of `original`: its text and URL. The edits share a damage budget of 1-4% of the
    page's shingles (at least one unit's worth), so the copy stays a near duplicate however short the
    page is."""
    rng = np.random.default_rng([seed, *key])
    page = Page(original.lang, original.site, original.url, original.date, [list(x) for x in original.body],
                list(original.header), list(original.footer))
    shingles = page.units() + _boilerplate_units(page)
    budget = max(_unit_cost(page.lang), float(rng.uniform(0.01, 0.04)) * shingles)
    kinds = list(rng.choice(EDIT_KINDS, size=int(rng.choice([1, 2, 3], p=[0.45, 0.35, 0.2])), replace=False,
                            p=EDIT_WEIGHTS))
    url_before = page.url
    edits = [k for k in kinds if k != "whitespace"]
    spent = 0.0
    for i, kind in enumerate(edits):
        left = budget - spent
        if left < _min_cost(kind, page.lang):
            if i:
                continue
            kind = "substitute"  # the first edit always happens, at the cheapest
        share = left / (len(edits) - i)
        if kind == "substitute":
            spent += _substitute(rng, page, share)
        elif kind == "typo":
            spent += _typo(rng, page, share)
        elif kind == "insert":
            spent += _insert(rng, page, share)
        elif kind == "remove":
            spent += _remove(rng, page, share)
        else:
            spent += _boilerplate(rng, page, share, n_sites, seed)
    text = page.text()
    if "whitespace" in kinds:
        text = _respace(rng, text, page.lang)
    url = page.url if page.url != url_before else _url_variant(rng, page.url, page)
    return text, url


# --- The corpus ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Layout:
    """Which document is what: position → cluster (-1: unrelated page), member (0: the original)."""

    docs: int
    cluster: np.ndarray
    member: np.ndarray
    ordinal: np.ndarray  # unrelated pages: their index among unrelated pages (gives the language)

    @property
    def clusters(self) -> int:
        return int(self.cluster.max()) + 1 if (self.cluster >= 0).any() else 0


def layout(docs: int, seed: int, cluster_share: float = CLUSTER_SHARE) -> Layout:
    rng = np.random.default_rng([seed, 9])
    n_clusters = int(round(docs * cluster_share))
    copies = rng.choice(COPIES, size=n_clusters, p=COPY_WEIGHTS)
    while n_clusters and n_clusters + int(copies.sum()) > docs:  # tiny corpora: fewer, smaller clusters
        copies = np.maximum(copies - 1, 1)
        if n_clusters + int(copies.sum()) > docs:
            n_clusters -= 1
            copies = copies[:n_clusters]
    cluster = np.full(docs, -1, dtype=np.int64)
    member = np.zeros(docs, dtype=np.int64)
    perm = rng.permutation(docs)
    i = 0
    for k, c in enumerate(copies.tolist()):
        cluster[perm[i:i + c + 1]] = k
        member[perm[i:i + c + 1]] = np.arange(c + 1)
        i += c + 1
    ordinal = np.cumsum(cluster < 0) - 1
    return Layout(docs, cluster, member, ordinal)


def doc_id(pos: int) -> str:
    return f"doc-{pos:07d}"


def cluster_lang(k: int) -> str:
    return LANGS[k % len(LANGS)]


def _n_sites(docs: int) -> int:
    return max(4, docs // (len(LANGS) * PAGES_PER_SITE))


def iter_docs(docs: int, seed: int = 17, cluster_share: float = CLUSTER_SHARE, start: int = 0,
              stop: int | None = None) -> Iterator[dict]:
    """Documents `start`..`stop` in file order: {doc_id, url?, lang, text, cluster_id?, original?}. Every
    document comes from its own random stream, so any range gives the same documents as the whole."""
    lay = layout(docs, seed, cluster_share)
    n_sites = _n_sites(docs)
    originals: dict[int, Page] = {}
    for pos in range(start, docs if stop is None else stop):
        k = int(lay.cluster[pos])
        if k < 0:
            lang = LANGS[int(lay.ordinal[pos]) % len(LANGS)]
            page = make_page(seed, (0, pos), lang, n_sites)
            text, url, extra = page.text(), page.url, {}
        else:
            lang = cluster_lang(k)
            if k not in originals:
                originals[k] = make_page(seed, (1, k), lang, n_sites)
            m = int(lay.member[pos])
            original = originals[k]
            text, url = (original.text(), original.url) if m == 0 else make_copy(seed, original, (2, k, m), n_sites)
            extra = {"cluster_id": f"c{k:05d}", "original": m == 0}
        rec = {"doc_id": doc_id(pos)}
        if url is not None:
            rec["url"] = url
        yield {**rec, "lang": lang, "text": text, **extra}


def _write_part(job: tuple[Path, int, int, float, int, int]) -> dict:
    """Write one JSONL part (documents `start`..`stop`); return what the manifest and truth files need."""
    path, docs, seed, cluster_share, start, stop = job
    truth, langs, counts, text_bytes = [], [], Counter(), 0
    with open(path, "wb") as f:
        for rec in iter_docs(docs, seed, cluster_share, start, stop):
            cid = rec.pop("cluster_id", None)
            original = rec.pop("original", None)
            f.write((json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8"))
            langs.append(f"{rec['doc_id']}\t{rec['lang']}\n")
            counts[rec["lang"]] += 1
            text_bytes += len(rec["text"].encode("utf-8"))
            if cid is not None:
                truth.append(json.dumps({"doc_id": rec["doc_id"], "cluster_id": cid, "lang": rec["lang"],
                                         "original": original}) + "\n")
    return {"truth": truth, "langs": langs, "counts": counts, "text_bytes": text_bytes,
            "file": f"docs/{path.name}", "bytes": path.stat().st_size, "sha256": _sha256(path)}


def write_corpus(out: str | Path, docs: int, *, seed: int = 17, files: int = 8,
                 cluster_share: float = CLUSTER_SHARE, workers: int | None = None) -> dict:
    """Write the corpus under `out` (see the module docstring) and return its manifest. Parts are
    written by `workers` processes (default: one per core, at most 2); the bytes do not depend on it."""
    t0 = time.perf_counter()
    out = Path(out)
    (out / "docs").mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)  # written last: its presence says the rest is complete
    for old in (out / "docs").glob("part-*.jsonl"):
        old.unlink()
    jobs = [(out / "docs" / f"part-{f:04d}.jsonl", docs, seed, cluster_share, docs * f // files,
             docs * (f + 1) // files) for f in range(files)]
    workers = workers or min(2, os.cpu_count() or 1, files)
    if workers > 1:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            parts = pool.map(_write_part, jobs, chunksize=1)
    else:
        parts = [_write_part(job) for job in jobs]
    with open(out / "truth.jsonl", "w", encoding="utf-8") as f:
        f.writelines(line for part in parts for line in part["truth"])
    with open(out / "langs.tsv", "w", encoding="utf-8") as f:
        f.writelines(line for part in parts for line in part["langs"])
    counts = sum((part["counts"] for part in parts), Counter())
    text_bytes = sum(part["text_bytes"] for part in parts)
    manifest = {
        "generator": "bench/corpus.py", "version": VERSION, "generator_sha256": _sha256(Path(__file__)),
        "seed": seed, "docs": docs, "files": files,
        "cluster_share": cluster_share, "clusters": layout(docs, seed, cluster_share).clusters,
        "clustered_docs": sum(len(part["truth"]) for part in parts), "langs": dict(sorted(counts.items())),
        "text_bytes": text_bytes, "mean_text_bytes": round(text_bytes / max(1, docs)), "numpy": np.__version__,
        "parts": [{k: part[k] for k in ("file", "bytes", "sha256")} for part in parts],
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def ensure_corpus(out: str | Path, docs: int, *, seed: int = 17, files: int = 8) -> dict:
    """The manifest of the corpus at `out`, written first unless this generator (same source) already wrote
    one with these parameters there."""
    path = Path(out) / "manifest.json"
    if path.is_file():
        m = json.loads(path.read_text())
        if (m.get("generator_sha256"), m.get("seed"), m.get("docs"), m.get("files")) == \
                (_sha256(Path(__file__)), seed, docs, files):
            return m
    return write_corpus(out, docs, seed=seed, files=files)


@dataclass(frozen=True)
class Truth:
    clusters: dict[str, str]  # doc_id → planted cluster id (clustered documents only)
    langs: dict[str, str]  # doc_id → lang (every document)


def load_truth(out: str | Path) -> Truth:
    out = Path(out)
    clusters = {}
    with open(out / "truth.jsonl", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            clusters[r["doc_id"]] = r["cluster_id"]
    with open(out / "langs.tsv", encoding="utf-8") as f:
        langs = dict(line.rstrip("\n").split("\t") for line in f)
    return Truth(clusters, langs)


# --- Scores ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Scores:
    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int


def _scores(tp: int, fp: int, fn: int) -> Scores:
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Scores(precision, recall, f1, tp, fp, fn)


def _pairs(n: int) -> int:
    return n * (n - 1) // 2


def pair_scores(predicted: Mapping[str, str], truth: Mapping[str, str],
                docs: Iterable[str] | None = None) -> Scores:
    """Precision/recall/F1 of "same cluster" over all pairs of `docs` (default: every document either
    mapping names). A document missing from a mapping is alone in its cluster. Pairs are counted, not
    listed, so a tool that merges thousands of documents costs no memory."""
    universe = set(docs) if docs is not None else set(predicted) | set(truth)
    pred = Counter(predicted[d] for d in universe if d in predicted)
    true = Counter(truth[d] for d in universe if d in truth)
    both = Counter((predicted[d], truth[d]) for d in universe if d in predicted and d in truth)
    hit = sum(_pairs(n) for n in both.values())
    return _scores(hit, sum(_pairs(n) for n in pred.values()) - hit, sum(_pairs(n) for n in true.values()) - hit)


def pair_scores_by_lang(predicted: Mapping[str, str], truth: Mapping[str, str],
                        langs: Mapping[str, str]) -> dict[str, Scores]:
    """`pair_scores` within each language (a pair across languages counts in the overall figure only)."""
    by: dict[str, list[str]] = {}
    for d, lang in langs.items():
        by.setdefault(lang, []).append(d)
    return {lang: pair_scores(predicted, truth, docs) for lang, docs in sorted(by.items())}


def removal_scores(removed: Iterable[str], truth: Mapping[str, str]) -> Scores:
    """A planted cluster of c documents should lose exactly c-1 of them: per cluster TP = min(removed in
    it, c-1), the excess is FP, as is every removed document outside the clusters; FN is the rest."""
    removed = set(removed)
    sizes = Counter(truth.values())
    hit = Counter(truth[d] for d in removed if d in truth)
    tp = sum(min(hit[c], n - 1) for c, n in sizes.items())
    excess = sum(max(0, hit[c] - (n - 1)) for c, n in sizes.items())
    outside = sum(1 for d in removed if d not in truth)
    return _scores(tp, outside + excess, sum(n - 1 for n in sizes.values()) - tp)


def score_run(predicted: Mapping[str, str], removed: Iterable[str], truth: Truth) -> dict:
    """The benchmark's figures for one tool: pair P/R/F1, removal F1, the worst language's pair F1."""
    overall = pair_scores(predicted, truth.clusters, truth.langs)
    by_lang = pair_scores_by_lang(predicted, truth.clusters, truth.langs)
    worst = min(by_lang, key=lambda lang: (by_lang[lang].f1, lang))
    removal = removal_scores(removed, truth.clusters)
    return {"pair_precision": round(overall.precision, 4), "pair_recall": round(overall.recall, 4),
            "pair_f1": round(overall.f1, 4), "removal_precision": round(removal.precision, 4),
            "removal_recall": round(removal.recall, 4), "removal_f1": round(removal.f1, 4),
            "worst_lang": worst, "worst_lang_pair_f1": round(by_lang[worst].f1, 4),
            "pair_f1_by_lang": {lang: round(s.f1, 4) for lang, s in by_lang.items()}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=100000)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=17)
    p.add_argument("--files", type=int, default=8)
    args = p.parse_args(argv)
    manifest = write_corpus(args.out, args.docs, seed=args.seed, files=args.files)
    print(json.dumps({k: v for k, v in manifest.items() if k != "parts"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
