"""A labelled near-duplicate set in all 15 languages, with exact-Jaccard truth.

Base documents are disjoint pairs of UDHR sections of one language (real text; the five
spaceless languages included). Each base gets variants made by the edits near-duplicates have on
the web — a sentence inserted or removed, boilerplate header/footer lines, character typos,
paragraphs reordered — and a hard negative that shares only part of its text. Whether two documents
are near duplicates is then decided exactly: Jaccard of their shingle sets (the same shingles the
dedup uses) at the threshold; truth clusters are the connected components of those pairs, the
same notion of "same cluster" the dedup's components have.

`pair_scores` gives pair-level precision/recall/F1 of "same cluster" against that truth.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from data_engine.dedup.shingles import ShingleSpec, jaccard, shingle_sets
from data_engine.langs import LANGS, SPACELESS
from data_engine.sample.corpus import load_udhr, udhr_document, udhr_sections

_BOILERPLATE = ["Home | News | Contact", "Subscribe to our newsletter", "© 2024 All rights reserved.",
                "Share: Facebook | Twitter", "Read more articles"]


@dataclass(frozen=True)
class LabelledDoc:
    doc_id: str
    lang: str
    text: str
    origin: str  # the base document it was made from


def _paragraphs(lang: str) -> list[list[str]]:
    return [s for s in load_udhr(lang) if s]


def _typos(rng: random.Random, text: str, n: int) -> str:
    chars = list(text)
    for _ in range(n):
        if len(chars) < 3:
            break
        i = rng.randrange(len(chars) - 1)
        if rng.random() < 0.5:
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
        else:
            del chars[i]
    return "".join(chars)


def _variant(rng: random.Random, paras: list[str], other: list[str], kind: str) -> list[str]:
    out = list(paras)
    if kind == "insert" and other:
        out.insert(rng.randrange(len(out) + 1), rng.choice(other))
    elif kind == "remove" and len(out) > 2:
        del out[rng.randrange(len(out))]
    elif kind == "boilerplate":
        out = rng.sample(_BOILERPLATE, 2) + out + rng.sample(_BOILERPLATE, 1)
    elif kind == "typos":  # from one slip to a sloppy copy: spreads Jaccard across the threshold
        rate = rng.choice([0.002, 0.005, 0.01, 0.02])
        out = [_typos(rng, p, max(1, round(len(p) * rate))) if rng.random() < 0.7 else p for p in out]
    elif kind == "reorder" and len(out) > 1:
        i, j = rng.sample(range(len(out)), 2)
        out[i], out[j] = out[j], out[i]
    return out


def build_labelled_set(*, bases_per_lang: int = 8, variants: int = 4, seed: int = 7,
                       langs: Iterable[str] = LANGS) -> list[LabelledDoc]:
    """Base documents, their edited variants and hard negatives, shuffled deterministically."""
    rng = random.Random(seed)
    docs: list[LabelledDoc] = []
    kinds = ["insert", "remove", "boilerplate", "typos", "reorder"]
    for lang in langs:
        sections = _paragraphs(lang)
        sep = "\n"
        bases = [sections[2 * k] + sections[2 * k + 1] for k in range(min(bases_per_lang, len(sections) // 2))]
        for k, paras in enumerate(bases):
            origin = f"{lang}-{k:02d}"
            docs.append(LabelledDoc(f"{origin}-base", lang, sep.join(paras), origin))
            other = [p for j, b in enumerate(bases) if j != k for p in b]
            for v in range(variants):
                edits = rng.sample(kinds, rng.randint(1, 2))
                text = paras
                for kind in edits:
                    text = _variant(rng, text, other, kind)
                docs.append(LabelledDoc(f"{origin}-v{v}", lang, sep.join(text), origin))
            # A hard negative: half of this base, half of another one.
            j = (k + 1) % len(bases)
            half = paras[: max(1, len(paras) // 2)] + bases[j][len(bases[j]) // 2:]
            docs.append(LabelledDoc(f"{origin}-neg", lang, sep.join(half), origin + "-neg"))
    rng.shuffle(docs)
    return docs


def truth_clusters(docs: list[LabelledDoc], threshold: float, spec: ShingleSpec = ShingleSpec()) -> dict[str, str]:
    """doc_id → cluster id (smallest doc_id of its component of pairs with Jaccard ≥ threshold)."""
    by_lang: dict[str, list[int]] = defaultdict(list)
    for i, d in enumerate(docs):
        by_lang[d.lang].append(i)
    sets = shingle_sets([d.text for d in docs], [d.lang for d in docs], spec)
    parent = {d.doc_id: d.doc_id for d in docs}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for members in by_lang.values():  # different languages never share shingles worth checking
        for a_pos, a in enumerate(members):
            for b in members[a_pos + 1:]:
                if jaccard(sets[a], sets[b]) >= threshold:
                    ra, rb = find(docs[a].doc_id), find(docs[b].doc_id)
                    if ra != rb:
                        parent[max(ra, rb)] = min(ra, rb)
    return {d.doc_id: find(d.doc_id) for d in docs}


def _sentences(lang: str) -> list[str]:
    """UDHR paragraphs cut at sentence ends (or every ~120 characters for spaceless text)."""
    import re

    out: list[str] = []
    for para in (p for s in _paragraphs(lang) for p in s):
        parts = [x.strip() for x in re.split(r"(?<=[.;:!?。；：])\s*", para) if x.strip()]
        for part in parts:
            out += [part[i:i + 160] for i in range(0, len(part), 160)]
    return out


def build_background(n_docs: int, *, seed: int = 11, langs: Iterable[str] = LANGS) -> list[LabelledDoc]:
    """`n_docs` web-like documents: 6–18 random sentences of one language, a site header and
    footer, ~12% of them lightly edited copies of an earlier one. For benchmarks: big, realistic
    in length and duplication, without exact truth (score F1 on the labelled set inside it)."""
    rng = random.Random(seed)
    langs = list(langs)
    pools = {lang: _sentences(lang) for lang in langs}
    docs: list[LabelledDoc] = []
    for i in range(n_docs):
        if docs and rng.random() < 0.12:
            src = docs[rng.randrange(len(docs))]
            kind = rng.choice(["insert", "remove", "boilerplate", "typos", "reorder"])
            paras = _variant(rng, src.text.split("\n"), pools[src.lang], kind)
            docs.append(LabelledDoc(f"bg-{i:07d}", src.lang, "\n".join(paras), src.origin))
            continue
        lang = langs[i % len(langs)]
        body = rng.sample(pools[lang], k=min(len(pools[lang]), rng.randint(6, 18)))
        site = f"site{rng.randrange(500)}.example.org"
        text = "\n".join([f"{site} | Home | News"] + body + [f"© {site}"])
        docs.append(LabelledDoc(f"bg-{i:07d}", lang, text, f"bg-{i:07d}"))
    return docs


@dataclass(frozen=True)
class PairScores:
    precision: float
    recall: float
    f1: float
    true_pairs: int
    predicted_pairs: int


def _pairs(clusters: Mapping[str, str]) -> set[tuple[str, str]]:
    members: dict[str, list[str]] = defaultdict(list)
    for doc, cluster in clusters.items():
        members[cluster].append(doc)
    return {(a, b) for group in members.values() for i, a in enumerate(sorted(group))
            for b in sorted(group)[i + 1:]}


def pair_scores(predicted: Mapping[str, str], truth: Mapping[str, str]) -> PairScores:
    """Pair-level precision/recall/F1 of "same cluster" (documents missing from `predicted` are
    singletons)."""
    pred = _pairs({d: predicted.get(d, d) for d in truth})
    true = _pairs(truth)
    hit = len(pred & true)
    precision = hit / len(pred) if pred else 1.0
    recall = hit / len(true) if true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return PairScores(precision, recall, f1, len(true), len(pred))


# --- Real text and web junk for measuring the cleaning rules ---------------------------------------

_SENTENCE_JOIN = {"zho": ""}  # Chinese runs sentences together; every other language puts a space


def sib200_sentences(sib_dir: str | Path, lang: str) -> list[str]:
    """FLORES-200 sentences of `lang` from a SIB-200 copy (`<sib_dir>/<lang>/{train,dev,test}.tsv`),
    in file order; [] where the language's folder is absent."""
    import csv

    out: list[str] = []
    for split in ("train", "dev", "test"):
        path = Path(sib_dir) / lang / f"{split}.tsv"
        if path.is_file():
            with path.open(encoding="utf-8", newline="") as f:
                out += [row["text"].strip() for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
                        if row.get("text", "").strip()]
    return out


def real_documents(lang: str, *, sib_dir: str | Path | None = None, seed: int = 5) -> list[LabelledDoc]:
    """Documents of real text in `lang`, shaped like web pages of ordinary length.

    UDHR: the title and the preamble, then runs of consecutive sections (each its heading line and
    its paragraphs) of 400–1,500 characters or just over (≈ 70–300 words). SIB-200 (when `sib_dir`
    is given): the FLORES sentences, shuffled, in paragraphs of 1–4 sentences, 3–8 paragraphs a
    page (≈ 100–500 words). Headings
    without punctuation and lines ending in `;` or `:` are kept as they are: they are real text.
    """

    rng = random.Random(f"{seed}-{lang}")
    data = udhr_document(lang)
    sections = [(s.get("title") or "", s["paragraphs"]) for s in udhr_sections(lang) if s["paragraphs"]]
    # the preamble (its clauses end in `;` or `,` in most languages) is a page of its own
    target = 0
    pages = [[(data.get("title") or "", []), sections[0]]]
    for section in sections[1:]:
        if len(pages) == 1 or sum(len(p) for _, ps in pages[-1] for p in ps) >= target:
            pages.append([])
            target = rng.randint(400, 1500)  # characters: a short article page to a long one
        pages[-1].append(section)
    docs = [LabelledDoc(f"{lang}-udhr-{k:03d}", lang,
                        "\n".join(x for title, paras in page for x in [title, *paras] if x), "udhr")
            for k, page in enumerate(pages)]
    sentences = sib200_sentences(sib_dir, lang) if sib_dir is not None else []
    rng.shuffle(sentences)
    join = _SENTENCE_JOIN.get(lang, " ")
    paras: list[str] = []
    k = 0
    while k < len(sentences):
        take = rng.randint(1, 4)
        paras.append(join.join(sentences[k:k + take]))
        k += take
    k = 0
    while k < len(paras):
        take = rng.randint(3, 8)
        if len(paras) - (k + take) < 3:  # no stub page at the end
            take = len(paras) - k
        docs.append(LabelledDoc(f"{lang}-sib-{k:04d}", lang, "\n".join(paras[k:k + take]), "sib200"))
        k += take
    return docs


_UI_WORDS = ["Home", "About us", "Contact", "Login", "Register", "Cart", "Shop", "Blog", "News", "FAQ", "Sale",
             "Categories", "Search", "Help", "Careers", "Sitemap", "Support", "Deals", "Account", "Wishlist"]
_SOCIAL = ["Facebook", "Twitter", "Instagram", "YouTube", "TikTok", "LINE", "WhatsApp", "Telegram", "Zalo"]
_SEO_PHRASES = ["best price", "buy now", "free shipping", "cheap", "discount", "top quality", "100% original",
                "promo", "official store", "hot deal", "limited offer", "cash on delivery"]
_CODE_SNIPPETS = [
    ["function {f}(items) {{", "  var total = 0;", "  for (var i = 0; i < items.length; i++) {{",
     "    total += items[i].price * items[i].qty;", "  }}", "  return total;", "}}",
     "document.getElementById('{f}').addEventListener('click', function (e) {{", "  e.preventDefault();",
     "  $('.cart').toggleClass('open');", "}});"],
    [".{f} {{", "  margin: 0 auto;", "  padding: 12px 16px;", "  color: #333;", "  font-family: Arial, sans-serif;",
     "}}", "@media (max-width: 768px) {{", "  .{f} {{ display: none; }}", "}}"],
    ["import os", "import json", "", "def {f}(path):", "    with open(path) as fh:", "        data = json.load(fh)",
     "    if not data:", "        return None", "    return [x['id'] for x in data['items']]", "",
     "class Config(object):", "    DEBUG = False", "    SECRET = os.environ.get('SECRET', '')"],
    ['<div class="{f}">', '  <ul class="nav">', '    <li><a href="/">{w}</a></li>',
     '    <li><a href="/shop">{w}</a></li>', "  </ul>", '  <script src="/static/js/{f}.min.js"></script>', "</div>"],
    ["<?php", "$conn = mysqli_connect($host, $user, $pass, $db);", "$sql = \"SELECT * FROM posts WHERE id = \" . $id;",
     "$result = mysqli_query($conn, $sql);", "while ($row = mysqli_fetch_assoc($result)) {{",
     "    echo '<h2>' . $row['title'] . '</h2>';", "}}", "?>"],
    ["{{", '  "{f}": {{', '    "id": 1024,', '    "name": "{w}",', '    "tags": ["{w}", "{w}"],', '    "active": true',
     "  }}", "}}"],
]


def _vocabulary(lang: str) -> list[str]:
    """Words of the language (UDHR): whitespace tokens without punctuation; for text written without
    spaces, pieces of 2–6 characters of its phrases."""
    import re

    text = " ".join(p for s in _paragraphs(lang) for p in s)
    tokens = [t for t in re.split(r"[\s\W]+", text) if t]
    if lang in SPACELESS:
        tokens = [t[i:i + 4] for t in tokens for i in range(0, len(t) - 1, 4)]
    return sorted({t for t in tokens if len(t) > 1}) or ["x"]


def _junk_menu(rng: random.Random, words: list[str]) -> str:
    items = _UI_WORDS + rng.sample(words, min(len(words), 40))
    return "\n".join(" ".join(rng.sample(items, rng.randint(1, 2))) for _ in range(rng.randint(30, 80)))


def _junk_seo(rng: random.Random, words: list[str]) -> str:
    """A page written around one target keyword: every line repeats it with sales phrases."""
    target = " ".join(rng.sample(words, 2))
    others = rng.sample(words, min(len(words), 8))
    forms = [lambda: f"{target} {rng.choice(_SEO_PHRASES)}",
             lambda: f"{rng.choice(_SEO_PHRASES)} {target} {rng.choice(others)}",
             lambda: f"{target} {rng.choice(others)} {rng.randrange(2020, 2027)}",
             lambda: f"{target} {rng.choice(_SEO_PHRASES)} {rng.choice(_SEO_PHRASES)}!",
             lambda: f"{rng.choice(others)} {target}, {target} {rng.choice(_SEO_PHRASES)}."]
    return "\n".join(rng.choice(forms)() for _ in range(rng.randint(20, 60)))


def _junk_keywords(rng: random.Random, words: list[str]) -> str:
    kws = rng.sample(words, min(len(words), 25))
    sep = rng.choice([", ", " | ", " - ", " "])
    return "\n".join(sep.join(rng.choice(kws) for _ in range(rng.randint(20, 60))) for _ in range(rng.randint(3, 8)))


def _junk_code(rng: random.Random, words: list[str]) -> str:
    lines: list[str] = []
    for _ in range(rng.randint(3, 8)):
        for line in rng.choice(_CODE_SNIPPETS):
            lines.append(line.format(f=f"fn_{rng.randrange(1000)}", w=rng.choice(words)))
    return "\n".join(lines)


def _junk_soup(rng: random.Random, words: list[str]) -> str:
    chars = sorted({c for w in words for c in w}) + list("0123456789%$&@*+=/\\|<>~^_")
    spaced = rng.random() < 0.5
    out = []
    for _ in range(rng.randint(400, 1500)):
        out.append(" " if spaced and rng.random() < 0.15 else rng.choice(chars))
    text = "".join(out)
    return "\n".join(text[i:i + 200] for i in range(0, len(text), 200))


def _junk_footer(rng: random.Random, words: list[str]) -> str:
    site = f"{rng.choice(words).lower()}{rng.randrange(100)}.com"
    blocks = [f"© {rng.randrange(2005, 2026)} {site}. All rights reserved.",
              " | ".join(rng.sample(["Privacy Policy", "Terms of Use", "Cookie Policy", "Disclaimer", "Sitemap",
                                     "Advertise", "Contact"], 5)),
              "Follow us: " + " ".join(rng.sample(_SOCIAL, 4)),
              "We use cookies to improve your experience. By continuing you agree to our Cookie Policy.",
              f"Tel: +{rng.randrange(60, 99)} {rng.randrange(100, 999)} {rng.randrange(1000, 9999)} · "
              f"Email: info@{site}",
              "Page " + " ".join(str(p) for p in range(1, rng.randint(6, 12))) + " Next »",
              " ".join(rng.sample(words, min(len(words), 3)))]
    lines = []
    for _ in range(rng.randint(4, 10)):
        lines += rng.sample(blocks, rng.randint(3, len(blocks)))
    return "\n".join(lines)


def _junk_listing(rng: random.Random, words: list[str]) -> str:
    cur = rng.choice(["Rp", "₫", "฿", "RM", "₱", "$", "¥", "៛", "K"])
    return "\n".join(f"{' '.join(rng.sample(words, 2))} {rng.randrange(1, 99)}0{rng.randrange(100, 999)} {cur} "
                     f"★{rng.randint(1, 5)} ({rng.randrange(9999)}) {rng.choice(_UI_WORDS)}"
                     for _ in range(rng.randint(20, 60)))


def _junk_links(rng: random.Random, words: list[str]) -> str:
    return "\n".join(f"{rng.choice(words)} https://{rng.choice(words).lower()}.example.com/"
                     f"{rng.randrange(10**6)}/{rng.choice(words).lower()}-{rng.randrange(999)}.html"
                     for _ in range(rng.randint(20, 50)))


JUNK_KINDS = {"menu": _junk_menu, "seo_spam": _junk_seo, "keyword_stuffing": _junk_keywords, "code": _junk_code,
              "char_soup": _junk_soup, "footer": _junk_footer, "listing": _junk_listing, "link_farm": _junk_links}


def junk_documents(lang: str, n: int, *, seed: int = 3) -> list[LabelledDoc]:
    """`n` synthetic web-junk pages with words of `lang`, cycling through `JUNK_KINDS` (menus, SEO
    spam, keyword stuffing, source code, character soup, footers, product listings, link farms),
    each of ordinary page length. Made from what such pages look like, not from the cleaning
    rules: `origin` is the kind, so a measurement can say which kind got through."""
    rng = random.Random(f"{seed}-{lang}")
    words = _vocabulary(lang)
    kinds = [list(JUNK_KINDS)[i % len(JUNK_KINDS)] for i in range(n)]
    return [LabelledDoc(f"{lang}-junk-{i:03d}", lang, JUNK_KINDS[kind](rng, words), kind)
            for i, kind in enumerate(kinds)]
