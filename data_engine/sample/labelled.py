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

from data_engine.dedup.shingles import ShingleSpec, jaccard, shingle_sets
from data_engine.langs import LANGS
from data_engine.sample.corpus import load_udhr

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
