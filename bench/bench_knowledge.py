"""The tenant knowledge store (shared/knowledge/store.py): retrieval quality on a labelled set, latency at scale.

1. Quality. Documents (Markdown, HTML and plain text, with headings) are ingested through `KnowledgeStore.ingest`.
   Corpus A: five hold the 60 salon passages of bench_embedders.py (each passage a paragraph or list item in a
   section), four are hand-written distractors of the same salon in the same vocabulary (staff handbook, hair-care
   blog, supplier terms, salon news) that answer none of the questions: 19 chunks. Corpus B: A plus two generated
   documents (a 240-product catalogue with sizes and prices, 48 blog articles): 190 chunks, so the right chunk
   competes with near-misses as in a real knowledge base. The 38 customer questions of bench_embedders.py are
   asked; a hit is right when its chunk's text contains the question's passage. Reported
   per embedder (local-hash, wordllama-256) and method: vector only (`vector_ranked`), full text only
   (`fulltext_ranked` with the store's tsquery), hybrid (`KnowledgeStore.search`, limit 5, as a turn calls it):
   recall@1, recall@5, MRR@5, and recall@20 of each single method (20 = the candidates hybrid fuses for limit 5).
2. Latency. One tenant database (wordllama-256, dim 256) grows to each size in `--sizes`: synthetic documents of
   100 chunks, each chunk 60-180 words drawn from a Zipf vocabulary whose most frequent words are the stop words
   (so content words match from a few to ~10% of the chunks, as in real text) and an embedding near one of 2000
   wordllama-embedded topic sentences. Loaded by COPY; the HNSW index is built after loading. Queries: the 38
   questions and synthetic 2-6 word questions, half each. Timed: `KnowledgeStore.search` (query embedding
   included), the query embedding alone, and the SQL parts (`vector_ranked`, `fulltext_ranked` with the store's
   candidate count). "before" columns run the SQL as it was before this benchmark (exact vector scan, ts_rank
   over all matches) on a subset of the queries; "agree" is the share of the before-query's top-20 that the
   current query also returns (recall of exact vector top-20 for the vector part).

Usage:  .venv/bin/python bench/bench_knowledge.py [--sizes 10000,100000,1000000] [--queries 200] [--quick]
        --quick = --sizes 10000 --queries 50 (a minute or two); --skip-quality / --skip-latency run one part.
Starts an embedded PostgreSQL 16 + pgvector (devtools.devstack.start_postgres) unless BENCH_DATABASE_URL names a
server whose user may create databases; the benchmark databases are dropped at the end.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import random
import re
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import psycopg  # noqa: E402
from pgvector import Vector  # noqa: E402
from pgvector.psycopg import register_vector  # noqa: E402
from psycopg.conninfo import make_conninfo  # noqa: E402
from psycopg.rows import dict_row  # noqa: E402

from bench_embedders import PASSAGES, QUESTIONS  # noqa: E402
from benchdb import bench_server  # noqa: E402
from shared.config.settings import load_settings  # noqa: E402
from shared.config.tenants import parse_tenants  # noqa: E402
from shared.db import knowledge as repo  # noqa: E402
from shared.db.migrate import migrate_tenant  # noqa: E402
from shared.knowledge import store as kstore  # noqa: E402
from shared.knowledge.store import KnowledgeStore  # noqa: E402
from shared.knowledge.terms import fulltext_terms  # noqa: E402
from shared.memory.store import query_terms  # noqa: E402
from shared.memory.embedders import HashEmbedder  # noqa: E402
from shared.memory.store import STOP_WORDS  # noqa: E402
from shared.memory.wordllama_embedder import WordLlamaEmbedder  # noqa: E402

DIM = 256
logging.disable(logging.INFO)  # pgserver and migrations log every step
CHUNKS_PER_DOC = 100
TOPICS = 2000
PSEUDO_WORDS = 20000


# ---------------------------------------------------------------- the labelled corpus

def _md(title: str, sections: list[tuple[str, list[str]]], intro: str = "") -> bytes:
    body = [f"# {title}", intro] + [f"## {h}\n\n" + "\n\n".join(ps) for h, ps in sections]
    return "\n\n".join(b for b in body if b).encode()


def _html(title: str, sections: list[tuple[str, list[str]]]) -> bytes:
    parts = [f"<html><head><title>{title}</title></head><body><h1>{title}</h1>"]
    for heading, items in sections:
        parts.append(f"<h2>{heading}</h2><ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>")
    return ("".join(parts) + "</body></html>").encode()


def _txt(title: str, paragraphs: list[str]) -> bytes:
    return (title + "\n\n" + "\n\n".join(paragraphs) + "\n").encode()


P = PASSAGES
LABELLED_DOCS = {
    "hours-and-location.md": _md("Opening hours and how to find us", [
        ("Opening hours", [P[0], P[1], P[2], P[3], P[9]]),
        ("Holidays", [P[4], "Opening times for the Easter weekend are announced in March."]),
        ("Finding us", [P[5], P[6], P[7], P[8]])],
        "Salon Keller is a hair and beauty salon in the old town."),
    "price-list.html": _html("Price list", [
        ("Hair", [P[10], P[11], P[12], P[13], P[14], P[20]]),
        ("Nails and beauty", [P[15], P[16], P[17], P[18]]),
        ("Special occasions", [P[19]]),
        ("Discounts and vouchers", [P[21], P[22], P[23], P[24]])]),
    "policies.txt": _txt("Salon policies", [P[i] for i in range(25, 40)]),
    "appointments.md": _md("Appointments", [
        ("How do I book?", [P[40], P[44]]), ("Walk-ins", [P[41]]), ("Reminders and changes", [P[42], P[43]]),
        ("How long does it take?", [P[45]]), ("Stylists and consultations", [P[46], P[47]]),
        ("Your first visit", [P[48]]), ("Home visits", [P[49]])]),
    "shop-and-salon.md": _md("Shop and salon", [
        ("Products", [P[50], P[51]]), ("While you wait", [P[52], P[53]]),
        ("About us", [P[54], P[55], P[56], P[57]]), ("Other", [P[58], P[59]])]),
}

DISTRACTOR_DOCS = {
    "staff-handbook.md": _md("Staff handbook", [
        ("Shifts", ["Stylists work in two shifts: the early shift starts at 8:30 and the late shift ends after the "
                    "last client has left.", "Shift swaps must be agreed with the salon manager a week ahead."]),
        ("Breaks", ["Every employee takes a 30-minute lunch break; breaks are planned in the booking system so "
                    "no client waits."]),
        ("Staff holidays", ["Staff holidays are requested before the end of January; no more than two stylists "
                            "may be on leave at the same time, and nobody takes leave in December."]),
        ("Staff discount", ["Employees get 30 percent off products for their own use; services for family "
                            "members are charged at half price outside opening hours."]),
        ("Sick leave", ["If you are ill, call the manager before 8am so your appointments can be moved to a "
                        "colleague or rescheduled with the clients."]),
        ("Uniform and hygiene", ["The black salon uniform is provided and washed by the salon.",
                                 "Wash your hands before every client and disinfect the chair and the basin."]),
        ("Training", ["New colour techniques are trained every second Monday evening; attendance counts as "
                      "working time."])]),
    "hair-care-blog.html": _html("Hair care blog", [
        ("Looking after coloured hair", ["Use a sulphate-free shampoo and wash with lukewarm water so the colour "
                                         "lasts longer.", "A weekly mask keeps bleached hair soft."]),
        ("How often should you get a trim?", ["Most people need a trim every six to eight weeks to keep split "
                                              "ends away; long hair can wait a little longer."]),
        ("Summer hair", ["Salt water and sun dry the hair out: rinse after swimming and wear a hat at the "
                         "beach."]),
        ("Wedding trends", ["This year brides choose loose waves and flowers in their hair rather than tight "
                            "up-dos."]),
        ("Caring for your nails at home", ["Push back the cuticles after a shower and file in one direction "
                                           "only."]),
        ("Beards", ["A beard oil once a day keeps the skin underneath from itching."])]),
    "supplier-terms.txt": _txt("Supplier terms", [
        "Orders placed before noon are delivered the next working day; deliveries arrive at the back door on "
        "Mill Lane.",
        "Invoices are paid by bank transfer within 30 days; the supplier charges interest on late payments.",
        "Damaged goods must be reported within two days of delivery and are replaced free of charge.",
        "Prices of colour products change every January; the supplier sends the new price list in November.",
        "Samples of new shampoos are free for the salon and may be given to clients.",
        "The sales representative visits on the first Tuesday of every month."]),
    "salon-news.md": _md("Salon news", [
        ("New stylist", ["Lucia joins our team in March; she trained in Milan and specialises in curly hair."]),
        ("Renovation", ["In 2019 the salon was renovated: new basins, new chairs and a larger waiting area."]),
        ("Charity day", ["Every September we cut hair for free for one day and donate the tips to the local "
                         "children's hospital."]),
        ("Award", ["Salon Keller was voted the best salon in town by the readers of the city paper."]),
        ("Opening of the beauty room", ["Since last spring massages and facials take place in the quiet room "
                                        "on the first floor."])]),
}


def generated_distractors(seed: int = 3) -> dict[str, bytes]:
    """Generated documents in the salon's own words that answer none of the questions: a product catalogue
    (prices, sizes, "costs ... euros") and blog articles (hair, nails, colour, weddings), so the labelled passages
    compete with a few hundred chunks' worth of near-misses rather than a handful."""
    rng = random.Random(seed)
    brands = ["Aurelia", "Botanica", "Keller Pro", "Nordlicht", "Silkwave", "Terra", "Lumen", "Oase"]
    kinds = ["shampoo", "conditioner", "hair mask", "styling gel", "hair spray", "serum", "dry shampoo",
             "nail polish", "hand cream", "beard oil", "heat protection spray", "curl cream"]
    hair = ["curly", "fine", "coloured", "dry", "oily", "thick", "blonde", "damaged"]
    benefits = ["adds shine", "tames frizz", "protects the colour", "strengthens the ends", "adds volume",
                "soothes the scalp", "keeps the style all day", "smells of citrus and mint"]
    sections: dict[str, list[tuple[str, list[str]]]] = {}
    for brand, kind, kinds_hair in rng.sample([(b, k, h) for b in brands for k in kinds for h in hair], 240):
        text = (f"The {brand} {kind} for {kinds_hair} hair {rng.choice(benefits)} and {rng.choice(benefits)}. "
                f"It is made with {rng.choice(['argan oil', 'aloe vera', 'keratin', 'shea butter', 'rice protein'])}"
                f" and is free of {rng.choice(['silicones', 'parabens', 'sulphates', 'added perfume'])}. The "
                f"{rng.choice([50, 100, 200, 250, 500])} ml size costs {rng.randint(8, 49)} euros in the shop; ask "
                f"your stylist which one suits you.")
        sections.setdefault(kind.capitalize(), []).append((f"{brand} {kind} ({kinds_hair} hair)", [text]))
    catalogue = "# Product catalogue\n\n" + "\n\n".join(
        f"## {kind}\n\n" + "\n\n".join(f"### {name}\n\n{t[0]}" for name, t in items)
        for kind, items in sections.items())
    topics = ["colour", "curls", "wedding styles", "men's cuts", "nails", "scalp care", "summer", "winter",
              "children's hair", "grey hair", "extensions", "eyebrows"]
    openers = ["Many clients ask us about {t}.", "This month our stylists share their tips on {t}.",
               "Here is what we have learned about {t} over the years.", "{T} is one of our favourite topics."]
    bodies = ["Book a consultation if you are unsure, and bring photos of styles you like.",
              "Wash less often than you think and always use lukewarm water.",
              "A good cut is the base of every style; the right product does the rest.",
              "Trends change every season, but healthy hair never goes out of fashion.",
              "Ask at reception for a sample before you buy a full size.",
              "Our team trains twice a year to keep up with new techniques and products.",
              "Protect your hair from heat with a spray before using a straightener or a curling iron.",
              "Drink enough water and eat well: it shows in your hair, skin and nails.",
              "Regular trims keep the ends healthy, even when you are growing your hair long.",
              "Colour fades faster in the sun, so a hat and a colour-protecting shampoo help in summer."]
    articles = []
    for n in range(48):
        topic = topics[n % len(topics)]
        paragraphs = [rng.choice(openers).format(t=topic, T=topic.capitalize())] + [
            " ".join(rng.sample(bodies, 3)) for _ in range(3)]
        articles.append((f"{topic.capitalize()}: tips, part {n // len(topics) + 1}", paragraphs))
    blog = "# Salon blog\n\n" + "\n\n".join(f"## {h}\n\n" + "\n\n".join(ps) for h, ps in articles)
    return {"product-catalogue.md": catalogue.encode(), "salon-blog.md": blog.encode()}


GENERATED_DOCS = generated_distractors()


def normalise(text: str) -> str:
    return " ".join(text.split())


def make_tenant(dsn: str, model: str):
    env = {"REDIS_URL": "redis://127.0.0.1:1/0", "WEBHOOK_VERIFY_TOKEN": "bench", "INFOBIP_BASE_URL":
           "http://127.0.0.1:1", "INFOBIP_API_KEY": "bench", "LLM_PROVIDER": "mock"}
    settings = load_settings(env, dotenv=False)
    doc = {"tenant_id": "bench", "waba_number": "+1 555 0100", "db_dsn": dsn, "embedding_model": model,
           "vector_store": "pgvector", "config": {"embedding_dim": DIM}}
    return parse_tenants({"tenants": [doc]}, settings, {}).require("bench")


def ingest_corpus(conn, store: KnowledgeStore, docs: dict[str, bytes]) -> dict[int, str]:
    """Ingests `docs`; returns every chunk's normalised text by id (and checks each passage lands whole in some
    chunk)."""
    for name, data in docs.items():
        result = store.ingest(conn, f"kb/{name}", data, name)
        assert result.status == "added", result
    rows = conn.execute("SELECT id, text FROM knowledge_chunks").fetchall()
    texts = {r["id"]: normalise(r["text"]) for r in rows}
    missing = [p for p in PASSAGES if not any(normalise(p) in t for t in texts.values())]
    assert not missing, f"passages split or lost by chunking: {missing[:3]}"
    return texts


def quality_rankings(conn, store: KnowledgeStore, question: str) -> dict[str, list[int]]:
    """Each method's ranking for one question: single methods their top 20, hybrid its top 5 (a turn's call)."""
    [vector] = store.embedder.embed([question])
    return {"vector": [i for i, _ in repo.vector_ranked(conn, vector, 20)],
            "fulltext": fulltext_ids(conn, store, question, 20),
            "hybrid": [h.chunk_id for h in store.search(conn, question, limit=5).hits]}


def quality_of(base: str, name: str, embedder, docs: dict[str, bytes]) -> tuple[int, dict, list[str]]:
    """(chunks, rank of the right chunk per method and question (None: not found), hybrid misses)."""
    dsn = make_conninfo(base, dbname=f"bench_kq_{uuid.uuid4().hex[:8]}")
    tenant = make_tenant(dsn, name)
    migrate_tenant(tenant)
    store = KnowledgeStore(tenant, embedder)
    ranks: dict[str, list[int | None]] = {"vector": [], "fulltext": [], "hybrid": []}
    misses: list[str] = []
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        texts = ingest_corpus(conn, store, docs)
        conn.commit()
        for question, gold in QUESTIONS:
            passage = normalise(PASSAGES[gold])
            for method, ids in quality_rankings(conn, store, question).items():
                pos = next((n for n, i in enumerate(ids, 1) if passage in texts[i]), None)
                ranks[method].append(pos)
                if method == "hybrid" and (pos is None or pos > 5):
                    misses.append(f"  {question!r} -> {PASSAGES[gold]!r}")
    return len(texts), ranks, misses


def run_quality(base: str) -> None:
    print(f"== Quality: {len(QUESTIONS)} questions; right = the chunk contains the question's passage. Corpus A: "
          f"{len(LABELLED_DOCS)} documents with the {len(PASSAGES)} passages + {len(DISTRACTOR_DOCS)} hand-written "
          f"distractors; B: A + {len(GENERATED_DOCS)} generated distractors (catalogue, blog)")
    header = (f"{'corpus':<7} {'embedder':<14} {'method':<9} {'chunks':>6} {'r@1':>6} {'r@5':>6} {'MRR@5':>6} "
              f"{'r@20':>6}")
    print(header + "\n" + "-" * len(header))
    corpora = {"A": {**LABELLED_DOCS, **DISTRACTOR_DOCS},
               "B": {**LABELLED_DOCS, **DISTRACTOR_DOCS, **GENERATED_DOCS}}
    all_misses: list[str] = []
    for corpus, docs in corpora.items():
        for name, embedder in (("local-hash", HashEmbedder(DIM)), ("wordllama-256", WordLlamaEmbedder())):
            chunks, ranks, misses = quality_of(base, name, embedder, docs)
            if name == "wordllama-256":
                all_misses += [f"corpus {corpus}: {len(misses)}"] + misses
            for method, got in ranks.items():
                n = len(got)
                r20 = f"{sum(1 for p in got if p) / n:>6.3f}" if method != "hybrid" else f"{'-':>6}"
                print(f"{corpus:<7} {name:<14} {method:<9} {chunks:>6} {sum(1 for p in got if p == 1) / n:>6.3f} "
                      f"{sum(1 for p in got if p and p <= 5) / n:>6.3f} "
                      f"{sum(1 / p for p in got if p and p <= 5) / n:>6.3f} {r20}")
    print("\nwordllama-256 hybrid misses (passage not in the top 5), by corpus:")
    print("\n".join(all_misses))


# ---------------------------------------------------------------- the synthetic corpus at scale

class Synth:
    """Zipf text over stop words first, then real words (passages, questions), then pseudo-words; topic vectors."""

    def __init__(self, seed: int = 7):
        self.rng = np.random.default_rng(seed)
        real = sorted({w.lower() for t in PASSAGES + [q for q, _ in QUESTIONS] for w in re.findall(r"[a-z]+", t,
                                                                                                   re.I)})
        syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"]
        pseudo = {"".join(self.rng.choice(syllables, self.rng.integers(2, 5))) for _ in range(PSEUDO_WORDS)}
        content = [w for w in real if w not in STOP_WORDS] + sorted(pseudo - set(real))
        self.rng.shuffle(content)
        self.words = np.array(sorted(STOP_WORDS) + content)
        weights = 1.0 / np.arange(1, len(self.words) + 1) ** 1.07
        self.p = weights / weights.sum()
        self.topics = None

    def texts(self, n: int, lo: int, hi: int) -> list[str]:
        lengths = self.rng.integers(lo, hi + 1, n)
        flat = self.words[self.rng.choice(len(self.words), int(lengths.sum()), p=self.p)]
        out, at = [], 0
        for k in lengths:
            out.append(" ".join(flat[at:at + k]))
            at += k
        return out

    def vectors(self, embedder, n: int) -> np.ndarray:
        """Unit vectors near wordllama embeddings of TOPICS synthetic sentences (clustered, like real chunks)."""
        if self.topics is None:
            self.topics = np.array(embedder.embed(self.texts(TOPICS, 8, 20)), dtype=np.float32)
        v = self.topics[self.rng.integers(0, TOPICS, n)] + self.rng.normal(0, 0.6 / DIM ** 0.5, (n, DIM))
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def load_chunks(conn, synth: Synth, embedder, first_doc: int, docs: int) -> float:
    """COPY `docs` documents of CHUNKS_PER_DOC chunks (numbered from `first_doc`); returns seconds."""
    t0 = time.perf_counter()
    with conn.cursor().copy("COPY knowledge_documents (source, title, kind, content_hash, tags, status, "
                            "chunk_count) FROM STDIN") as copy:
        titles = synth.texts(docs, 2, 5)
        for d in range(docs):
            copy.write_row((f"synthetic/{first_doc + d}.md", titles[d], "markdown", f"h{first_doc + d}",
                            ["synthetic"], "ready", CHUNKS_PER_DOC))
    ids = [r["id"] for r in conn.execute("SELECT id FROM knowledge_documents WHERE source LIKE 'synthetic/%%' "
                                         "ORDER BY id OFFSET %s", (first_doc,)).fetchall()]
    with conn.cursor().copy("COPY knowledge_chunks (document_id, ordinal, heading_path, text, content_hash, "
                            "embedding) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(["int8", "int4", "text[]", "text", "text", "vector"])
        for start in range(0, len(ids), 50):
            batch = ids[start:start + 50]
            n = len(batch) * CHUNKS_PER_DOC
            texts, heads, vecs = synth.texts(n, 60, 180), synth.texts(n, 1, 3), synth.vectors(embedder, n)
            for j in range(n):
                copy.write_row((batch[j // CHUNKS_PER_DOC], j % CHUNKS_PER_DOC, [heads[j]], texts[j],
                                hashlib.md5(texts[j].encode()).hexdigest(), Vector(vecs[j])))
    conn.commit()
    return time.perf_counter() - t0


def pct(values: Sequence[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def timed(fn: Callable[[str], object], queries: Sequence[str]) -> tuple[list[float], list[object]]:
    for q in queries[:5]:  # warm caches and plans
        fn(q)
    times, results = [], []
    for q in queries:
        t0 = time.perf_counter()
        results.append(fn(q))
        times.append((time.perf_counter() - t0) * 1000)
    return times, results


def before_vector(conn, vector, limit: int) -> list[int]:
    """The vector query before this benchmark (exact: ORDER BY distance, id over the join)."""
    return [r["id"] for r in conn.execute("""
        WITH candidates AS NOT MATERIALIZED (
            SELECT c.id, c.embedding FROM knowledge_chunks c JOIN knowledge_documents d ON d.id = c.document_id
            WHERE d.status = 'ready' AND c.embedding IS NOT NULL)
        SELECT id FROM candidates WHERE embedding <=> %(q)s::vector <= 1.0
        ORDER BY embedding <=> %(q)s::vector, id LIMIT %(limit)s""",
                                           {"q": repo.vector_literal(vector), "limit": limit}).fetchall()]


def fulltext_ids(conn, store: KnowledgeStore, query: str, k: int) -> list[int]:
    """Full text's ranking as the store's hybrid search calls it (whole words with their forms, common words out
    of the any-word pool); nothing for a question of stop words or common words alone."""
    groups = fulltext_terms(query)
    informative = store.informative(conn, groups) if groups else []
    return repo.fulltext_ranked(conn, groups, k, pool_groups=informative) if informative else []


def before_tsquery(query: str) -> str:
    """The tsquery before this benchmark: every word (stop words too when alone) as a prefix, OR-ed."""
    return " | ".join(f"'{t}':*" for t in query_terms(query))


def before_fulltext(conn, tsquery: str, limit: int) -> list[int]:
    """The full-text query before this benchmark (ts_rank over every match)."""
    return [r["id"] for r in conn.execute("""
        SELECT c.id FROM knowledge_chunks c JOIN knowledge_documents d ON d.id = c.document_id
        WHERE d.status = 'ready' AND (c.tsv @@ to_tsquery('simple', %(q)s) OR d.title_tsv @@ to_tsquery('simple',
        %(q)s)) ORDER BY ts_rank(c.tsv || d.title_tsv, to_tsquery('simple', %(q)s)) DESC, c.id LIMIT %(limit)s""",
                                           {"q": tsquery, "limit": limit}).fetchall()]


def latency_queries(synth: Synth, n: int) -> list[str]:
    questions = [q for q, _ in QUESTIONS]
    synthetic = [t + "?" for t in synth.texts(n, 2, 6)]
    return [questions[i // 2 % len(questions)] if i % 2 == 0 else synthetic[i] for i in range(n)]


def warm_up(conn, store: KnowledgeStore, queries: list[str]) -> float:
    """Search once for each of `queries` (others than the timed ones), so the indexes' pages are in memory as on
    a server that searches all day; returns the seconds it took."""
    t0 = time.perf_counter()
    for q in queries:
        store.search(conn, q, limit=5)
    return time.perf_counter() - t0


def measure_size(conn, store: KnowledgeStore, size: int, queries: list[str], before_n: int) -> None:
    """One row per part at this size: p50/p95/p99 now, and the before-query's p50/p95 with the agreement."""
    k = max(5 * kstore.CANDIDATES, kstore.MIN_CANDIDATES)
    embedder = store.embedder
    vectors = {q: embedder.embed([q])[0] for q in queries}
    texts = [q for q in queries if query_terms(q)]
    parts = {
        "search (limit 5)": (lambda q: store.search(conn, q, limit=5), None),
        "  embed query": (lambda q: embedder.embed([q]), None),
        "  vector_ranked": (lambda q: [i for i, _ in repo.vector_ranked(conn, vectors[q], k)],
                            lambda q: before_vector(conn, vectors[q], k)),
        "  fulltext_ranked": (lambda q: fulltext_ids(conn, store, q, k),
                              lambda q: before_fulltext(conn, before_tsquery(q), k)),
    }
    for part, (now, before) in parts.items():
        times, got = timed(now, texts)
        line = (f"{size:>8,}  {part:<18} {statistics.median(times):>7.2f} {pct(times, 95):>7.2f} "
                f"{pct(times, 99):>7.2f}")
        if before is not None and before_n:
            subset = texts[:max(10, min(before_n, before_n * 20000 // size))]  # seconds a query at 1M chunks
            old_times, old = timed(before, subset)
            agree = sum(len(set(a) & set(b)) for a, b in zip(got, old)) / max(1, sum(len(b) for b in old))
            line += (f"  {statistics.median(old_times):>9.2f} {pct(old_times, 95):>9.2f} "
                     f"{pct(old_times, 95) / max(pct(times, 95), 1e-9):>7.1f}x {agree:>6.0%}")
        print(line, flush=True)


class _ExplainCursor(psycopg.Cursor):
    """Runs every statement under EXPLAIN (ANALYZE, BUFFERS) and keeps the plans (the caller sees no rows)."""
    plans: list[str] = []

    def execute(self, query, params=None, **kwargs):
        super().execute("EXPLAIN (ANALYZE, BUFFERS) " + query, params, **kwargs)
        _ExplainCursor.plans.append("\n".join(next(iter(r.values())) if isinstance(r, dict) else r[0]
                                                     for r in super().fetchall()))
        return super().execute("SELECT 1 WHERE false", **kwargs)


def explain(dsn: str, store: KnowledgeStore, query: str) -> None:
    """The plans of the two SQL parts for one query."""
    k = max(5 * kstore.CANDIDATES, kstore.MIN_CANDIDATES)
    vector = store.embedder.embed([query])[0]
    with psycopg.connect(dsn, cursor_factory=_ExplainCursor) as conn:
        for name, fn in (("vector_ranked", lambda: repo.vector_ranked(conn, vector, k)),
                         ("fulltext_ranked", lambda: fulltext_ids(conn, store, query, k))):
            _ExplainCursor.plans.clear()
            fn()
            print(f"  EXPLAIN ANALYZE {name} ({query!r}):")
            print("\n".join("    " + line for line in "\n".join(_ExplainCursor.plans).splitlines()))


def latency_database(base: str, name: str | None) -> tuple[str, int]:
    """The latency part's database and how many synthetic chunks it holds: a new one (dropped at the end), or
    `name`, created when missing and kept, so a later run at the same sizes skips loading and indexing."""
    if name is None:
        return make_conninfo(base, dbname=f"bench_kl_{uuid.uuid4().hex[:8]}"), 0
    with psycopg.connect(make_conninfo(base, dbname="postgres"), autocommit=True) as admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            admin.execute(f'CREATE DATABASE "{name}"')
    dsn = make_conninfo(base, dbname=name)
    migrate_tenant(make_tenant(dsn, "wordllama-256"))
    with psycopg.connect(dsn) as conn:
        loaded = conn.execute("SELECT count(*) FROM knowledge_chunks c JOIN knowledge_documents d "
                              "ON d.id = c.document_id WHERE d.source LIKE 'synthetic/%%'").fetchone()[0]
    return dsn, loaded


def run_latency(base: str, sizes: list[int], n_queries: int, before_n: int, show_plans: bool,
                database: str | None = None, warm_n: int = 0) -> None:
    dsn, loaded = latency_database(base, database)
    tenant = make_tenant(dsn, "wordllama-256")
    migrate_tenant(tenant)
    embedder = WordLlamaEmbedder()
    store = KnowledgeStore(tenant, embedder)
    synth = Synth()
    queries = latency_queries(synth, n_queries)
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        register_vector(conn)
        version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        print(f"\n== Latency: PostgreSQL {conn.info.server_version // 10000}, pgvector {version['extversion']}, "
              f"wordllama-256, {CHUNKS_PER_DOC} chunks/document, {len(queries)} queries (before: first "
              f"{before_n}, fewer above 20k chunks, at least 10), top-5 search, "
              f"{max(5 * kstore.CANDIDATES, kstore.MIN_CANDIDATES)} candidates/method")
        header = (f"{'chunks':>8}  {'part':<18} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}  {'before p50':>9} "
                  f"{'before p95':>9} {'p95 x':>8} {'agree':>6}")
        for size in sizes:
            if size < loaded:
                print(f"\n{size:>8,} chunks: skipped (database {database!r} holds {loaded:,})")
                continue
            built = size == loaded
            if not built:
                conn.execute("DROP INDEX IF EXISTS knowledge_chunks_embedding_hnsw")
                conn.commit()
                secs = load_chunks(conn, synth, embedder, loaded // CHUNKS_PER_DOC,
                                   (size - loaded) // CHUNKS_PER_DOC)
                loaded = size
            conn.commit()
            conn.autocommit = True
            index_secs = 0.0 if built else build_index(conn)
            mb = conn.execute("SELECT pg_total_relation_size('knowledge_chunks') / 1e6 AS mb").fetchone()["mb"]
            print(f"\n{size:>8,} chunks: " + (f"as kept in database {database!r}" if built else
                  f"loaded by COPY in {secs:.0f} s, HNSW built in {index_secs:.0f} s") +
                  f", table + indexes {mb:,.0f} MB, shared_buffers "
                  f"{conn.execute('SHOW shared_buffers').fetchone()['shared_buffers']}")
            if warm_n:  # drawn after loading: the corpus is the same with or without a warm-up
                warm = [t + "?" for t in synth.texts(warm_n, 2, 6)]
                print(f"  warmed up by {warm_n} other searches in {warm_up(conn, store, warm):.0f} s")
            print(header + "\n" + "-" * len(header), flush=True)
            measure_size(conn, store, size, queries, before_n)
            if show_plans:
                explain(dsn, store, max(queries, key=lambda q: len(fulltext_terms(q))))
            conn.autocommit = False


def build_index(conn) -> float:
    """(Re)build the HNSW index after loading, then VACUUM ANALYZE; returns the index build's seconds."""
    t0 = time.perf_counter()
    conn.execute("SET maintenance_work_mem = '8GB'")
    conn.execute("SET max_parallel_maintenance_workers = 1")
    conn.execute("CREATE INDEX knowledge_chunks_embedding_hnsw ON knowledge_chunks "
                 "USING hnsw (embedding vector_cosine_ops)")
    index_secs = time.perf_counter() - t0
    conn.execute("VACUUM ANALYZE knowledge_chunks")
    conn.execute("VACUUM ANALYZE knowledge_documents")
    return index_secs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000", help="chunks, ascending, comma-separated")
    ap.add_argument("--queries", type=int, default=200, help="queries per latency measurement")
    ap.add_argument("--before-queries", type=int, default=50, help="queries timed with the before-SQL (0: none)")
    ap.add_argument("--quick", action="store_true", help="--sizes 10000 --queries 50")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--plans", action="store_true", help="print EXPLAIN ANALYZE of the SQL parts at each size")
    ap.add_argument("--warm-up", type=int, default=0, help="searches (not timed, other questions) before timing")
    ap.add_argument("--database", help="keep the latency corpus in this database (created when missing, never "
                                       "dropped): a later run at the same sizes skips loading and indexing")
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.queries = "10000", 50
    sizes = [int(s) for s in args.sizes.split(",")]
    with bench_server() as base:
        if not args.skip_quality:
            run_quality(base)
        if not args.skip_latency:
            run_latency(base, sizes, args.queries, min(args.before_queries, args.queries), args.plans,
                        args.database, args.warm_up)


if __name__ == "__main__":
    main()
