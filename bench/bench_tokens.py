"""Prompt tokens, model calls and the provider's prefix cache per turn, over a scripted conversation (issue 17).

One user talks to the bot through a 60-turn script (greetings, thanks, saving events, reminders, schedule
questions, weather questions, chit-chat, questions about earlier things), played `--rounds` times (default 3,
one day apart: 180 turns). It runs through the real engine (`shared.conversation.engine.respond`) against four
tenants that differ only in their settings:

- default: tool gating on, `history_budget_tokens` 1500 apart from the tool schemas, rolling summaries on;
- gated, no summary: the same with `summary_max_tokens: 0` (older history dropped);
- ungated: every tool on every turn, budgets and summaries as the default;
- naive: no gating, no budget (`max_context_tokens` and `history_budget_tokens` 1,000,000), no summaries.
All four prefetch the reads the intent rules are sure of (`prefetch_reads`, on by default:
shared/conversation/prefetch.py), so a schedule or reminders question is one model call.

Each tenant has its own PostgreSQL database migrated with `migrate_tenant`; every turn runs in one transaction
(the user message is stored, the engine answers, usage and the reply are stored, then commit), so history and
saved items grow as in production. A summary update the turn asks for runs right after the commit, as the
`summaries` worker would (its prompt tokens are counted apart and in the totals). The model is `MockProvider`,
whose prompt tokens are estimated from the messages and tool schemas it is sent. History is read as
`shared.conversation.turn` reads it (at most HISTORY_ROWS = 200 messages). The tenant's one HTTP tool
(get_weather) points at 127.0.0.1:9: it is offered, and calls to it fail fast.

The prefix cache is simulated: a call's request is laid out as the provider renders it (system message, tool
schemas, then the other messages) and its cached part is its longest common prefix with any request of the last
60 minutes (simulated time), in 64-token blocks (DeepSeek; the OpenAI column also needs 1024 tokens and counts
128-token blocks). Billed cost counts cached tokens at `--cached-price` of the normal price.

The recall check plays the script again with turn 5 replaced by a fact no tool saves and turn 180 by a question
about it, and checks the answer.

Usage:  .venv/bin/python bench/bench_tokens.py [--rounds 3] [--cached-price 0.25]
Starts an embedded PostgreSQL (devtools.devstack.start_postgres) unless BENCH_DATABASE_URL names a server whose
user may create databases; the benchmark databases are dropped at the end.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg  # noqa: E402
from psycopg.conninfo import make_conninfo  # noqa: E402
from psycopg.rows import dict_row  # noqa: E402

from benchdb import bench_server  # noqa: E402
from shared.db import messages, users  # noqa: E402
from shared.db.usage import record_usage  # noqa: E402
from shared.conversation import summaries  # noqa: E402
from shared.db.migrate import migrate_tenant  # noqa: E402
from shared.conversation.engine import respond  # noqa: E402
from shared.llm.mock import MockProvider  # noqa: E402
from shared.memory.store import MemoryStore  # noqa: E402
from shared.config.settings import load_settings  # noqa: E402
from shared.config.tenants import Tenant, parse_tenants  # noqa: E402
from shared.conversation.tokens import estimate_tools  # noqa: E402
from shared.tools.registry import build_registry  # noqa: E402
from shared.conversation.turn import HISTORY_ROWS  # noqa: E402

UNBUDGETED = 1_000_000
START = datetime(2025, 3, 3, 8, 0, tzinfo=timezone.utc)  # a Monday morning
MINUTES_PER_TURN = 7
CONVERSATION = [
    "Hi!",
    "Remember I have a dentist appointment tomorrow at 2 PM",
    "Thanks",
    "What's the weather like in London?",
    "Remind me to call my mother in 2 hours",
    "What do I have scheduled this week?",
    "How are you?",
    "Save that my car is a blue Toyota with plate KX21 ABC",
    "What did I tell you about my car?",
    "ok cool",
    "Is it going to be sunny in Paris? I want to check the weather before my trip",
    "Remember I have a team meeting on Friday at 10 AM",
    "What reminders do I have?",
    "You are funny",
    "I had a long day at work, the traffic was terrible on the way home",
    "Remind me to buy milk tomorrow at 8 AM",
    "What's on my calendar tomorrow?",
    "Thank you!",
    "Good morning",
    "What did I tell you about the dentist?",
    "Note that my daughter's school pickup is at 3:30 PM on weekdays",
    "What is the weather in Berlin today?",
    "Great",
    "Remember I have a yoga class on Wednesday at 6 PM",
    "What do I have scheduled next week?",
    "Can you recommend a good book to read on holiday?",
    "Remind me to renew my passport next Monday at 9 AM",
    "What's the weather tomorrow, and what do I have scheduled?",
    "lol",
    "Who are you?",
    "Save that my gym membership number is 48213",
    "What do you know about my gym?",
    "Do I need an umbrella in London this afternoon? Check the weather please",
    "Remember I have dinner with Anna on Saturday at 7 PM",
    "Bye",
    "Good evening",
    "What reminders do I have?",
    "Remind me to water the plants in 3 hours",
    "My favourite colour is green, by the way",
    "What did I say about school pickup?",
    "Nice",
    "Weather in Madrid?",
    "Remember I have a doctor visit on Thursday at 11 AM",
    "What am I doing this week?",
    "That's a lot of appointments, I'm tired just reading it",
    "Thanks a lot",
    "Remind me to pay the rent tomorrow at 9 AM",
    "What's the weather like?",
    "Hello again",
    "Do you remember my car plate?",
    "I think I'll take the bike to work instead of the car",
    "What do I have scheduled tomorrow?",
    "ok",
    "Remember I have a haircut next Tuesday at 4 PM",
    "Is it cold in Oslo right now? What's the weather",
    "What reminders do I have?",
    "Tell me a joke",
    "Cheers",
    "What do I have scheduled this week?",
    "Good night",
]
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city: temperature in Celsius and conditions",
    "method": "GET",
    "url": "http://127.0.0.1:9/v1/current?city={city}",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}},
                   "required": ["city"]},
    "timeout_seconds": 2,
    "allow_private_network": True,
}
VARIANTS = [  # (label, tool_gating, budgets on, summaries on)
    ("default", True, True, True),
    ("gated, no summary", True, True, False),
    ("ungated", False, True, True),
    ("naive", False, False, False),
]
DEFAULT, NAIVE = "default", "naive"
FACT = "By the way, my sister Clara lives in Lisbon and works as a nurse"  # turn 5 of the recall run
QUESTION = "Where does my sister Clara live?"                           # turn 180
CACHE_SECONDS = 3600
BLOCK, OPENAI_MIN, OPENAI_BLOCK = 64, 1024, 128


@dataclass
class CallStat:
    prompt_tokens: int
    cached: int          # by prefix, 64-token blocks
    cached_openai: int   # >= 1024 tokens, 128-token blocks
    purpose: str


@dataclass
class TurnStat:
    text: str
    intent: str
    prompt_tokens: int
    llm_calls: int
    tools_offered: int
    history_used: int
    answer: str = ""
    calls: list = None          # CallStat of the turn's calls (summary calls after the turn included)
    summary_tokens: int = 0


def _lcp(a: str, b: str) -> int:
    """Length of the common prefix of two strings (slice comparisons run in C)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        mid = (low + high + 1) // 2
        if a[:mid] == b[:mid]:
            low = mid
        else:
            high = mid - 1
    return low


class CachingLLM:
    """MockProvider, with each request laid out as a provider renders it and its cacheable prefix measured."""

    def __init__(self, inner: MockProvider):
        self.inner, self.name, self.model, self.entry = inner, inner.name, inner.model, inner.entry
        self.seen: list[tuple[datetime, str]] = []
        self.now = START
        self.log: list[CallStat] = []
        self.purpose = "chat"

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def chat(self, messages, *, tools=None, **kw):
        result = self.inner.chat(messages, tools=tools, **kw)
        rendered = "".join([json.dumps(messages[0], default=str), json.dumps(tools or []),
                            *(json.dumps(m, default=str) for m in messages[1:])])
        self.seen = [(t, r) for t, r in self.seen if (self.now - t).total_seconds() <= CACHE_SECONDS]
        common = max((_lcp(rendered, r) for _, r in self.seen), default=0)
        self.seen.append((self.now, rendered))
        tokens = result.usage.prompt_tokens
        share = int(tokens * common / max(1, len(rendered)))
        openai = share // OPENAI_BLOCK * OPENAI_BLOCK if tokens >= OPENAI_MIN and share >= OPENAI_MIN else 0
        purpose = "intent" if "Classify the user's message" in json.dumps(messages[0]) else self.purpose
        self.log.append(CallStat(tokens, share // BLOCK * BLOCK, openai, purpose))
        return result


class BenchUow:
    """What `summaries.update_summary` needs of a unit of work: transactions on the bench connection."""

    def __init__(self, conn):
        self.conn = conn

    @contextmanager
    def transaction(self, tenant):
        with self.conn.transaction():
            yield SimpleNamespace(conn=self.conn)


def make_tenants(base: str) -> dict[str, tuple[Tenant, str]]:
    """The variant tenants (label -> (tenant, dsn)), each with its own fresh database."""
    env = {"REDIS_URL": "redis://127.0.0.1:1/0", "WEBHOOK_VERIFY_TOKEN": "bench", "INFOBIP_BASE_URL":
           "http://127.0.0.1:1", "INFOBIP_API_KEY": "bench", "LLM_PROVIDER": "mock"}
    settings = load_settings(env, dotenv=False)
    docs, dsns = [], {}
    for i, (label, gating, budgeted, summarised) in enumerate(VARIANTS):
        tid = f"tokens{i}"
        dsns[tid] = make_conninfo(base, dbname=f"bench_tokens_{i}_{uuid.uuid4().hex[:6]}")
        config = {"business_name": "Demo Dental Clinic", "timezone": "Europe/London", "rag_enabled": True,
                  "tool_gating": gating, "debounce_ms": 0, "summary_max_tokens": 300 if summarised else 0}
        if not budgeted:
            config.update(max_context_tokens=UNBUDGETED, history_budget_tokens=UNBUDGETED,
                          smalltalk_history_tokens=UNBUDGETED)
        docs.append({"tenant_id": tid, "waba_number": f"+1 555 010{i}", "db_dsn": dsns[tid],
                     "embedding_model": "local-hash", "vector_store": "pgvector",
                     "enabled_agents": ["orchestrator", "db_agent", "http_agent"], "http_tools": [WEATHER_TOOL],
                     "config": config})
    registry = parse_tenants({"tenants": docs}, settings, {})
    return {label: (registry.require(f"tokens{i}"), dsns[f"tokens{i}"]) for i, (label, *_) in enumerate(VARIANTS)}


def script(rounds: int, recall: bool = False) -> list[tuple[datetime, str]]:
    """(time, text) of every turn: the conversation `rounds` times, each round one day after the previous; the
    recall run says FACT at turn 5 and asks QUESTION at the last turn."""
    turns = [(START + timedelta(days=r, minutes=MINUTES_PER_TURN * i), text)
             for r in range(rounds) for i, text in enumerate(CONVERSATION)]
    if recall:
        turns[4] = (turns[4][0], FACT)
        turns[-1] = (turns[-1][0], QUESTION)
    return turns


def _turn(conn, tenant, llm, registry, memory, user_id: int, i: int, now: datetime, text: str):
    """One committed turn as shared.conversation.turn runs it; returns the answer and the tasks it published."""
    request_id, published = f"req_bench_{i}", []
    with conn.transaction():
        row = messages.insert_inbound(conn, user_id=user_id, infobip_message_id=f"bench-{tenant.tenant_id}-{i}",
                                      message_type="TEXT", body=text, payload={"type": "TEXT", "text": text},
                                      received_at=now, request_id=request_id)
        history = messages.recent_history(conn, user_id, HISTORY_ROWS, before_id=row)
        answer = respond(tenant=tenant, conn=conn, llm=llm, registry=registry, memory=memory, user_id=user_id,
                         phone="15550001111", text=text, history=history, now=now, clock=lambda now=now: now,
                         request_id=request_id, publish=lambda task, payload: published.append(payload))
        for call in answer.calls:
            record_usage(conn, user_id=user_id, request_id=request_id, provider=call.provider, model=call.model,
                         prompt_tokens=call.prompt_tokens, completion_tokens=call.completion_tokens,
                         latency_ms=call.latency_ms, tools_used=list(call.tools_used))
        messages.insert_assistant_message(conn, user_id=user_id, body=answer.text, reply_to=row,
                                          request_id=request_id)
        messages.set_status(conn, row, "answered")
    return answer, published


def run_conversation(tenant: Tenant, dsn: str, turns: list[tuple[datetime, str]]) -> list[TurnStat]:
    """Drive the script through the real engine, one committed transaction per turn; a summary update the turn
    asked for runs after its commit (what the `summaries` worker does)."""
    llm = CachingLLM(MockProvider())
    registry = build_registry(tenant)
    memory = MemoryStore(tenant)
    stats: list[TurnStat] = []
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        with conn.transaction():
            user_id = users.upsert_user(conn, "15550001111", "Bench User", START)
        for i, (now, text) in enumerate(turns):
            llm.now, llm.purpose, first = now, "chat", len(llm.log)
            answer, published = _turn(conn, tenant, llm, registry, memory, user_id, i, now, text)
            llm.purpose, chat_calls = "summary", len(llm.log) - first
            for _ in published:
                summaries.update_summary(tenant, BenchUow(conn), lambda t, c: llm, user_id, now)
            calls = llm.log[first:]
            stats.append(TurnStat(text, answer.intent.name, sum(c.prompt_tokens for c in answer.calls),
                                  chat_calls, len(answer.response.tools_offered), answer.history_used,
                                  answer.text, calls, sum(c.prompt_tokens for c in calls if c.purpose == "summary")))
    return stats


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


@dataclass
class Totals:
    per_turn: float        # prompt tokens per turn, summary calls included
    chat_per_turn: float   # prompt tokens per turn of the reply's calls
    calls_per_turn: float  # model calls per turn of the reply (intent included)
    cacheable: float       # share of prompt tokens cacheable by prefix after turn 10
    cacheable_openai: float
    billed: float          # per turn, cached tokens at `cached_price`


def totals(stats: list[TurnStat], cached_price: float) -> Totals:
    n = len(stats)
    calls = [c for s in stats for c in s.calls]
    late = [c for s in stats[10:] for c in s.calls]
    prompt = sum(c.prompt_tokens for c in calls)
    late_prompt = max(1, sum(c.prompt_tokens for c in late))
    billed = sum(c.prompt_tokens - c.cached * (1 - cached_price) for c in calls)
    return Totals(prompt / n, sum(s.prompt_tokens for s in stats) / n, sum(s.llm_calls for s in stats) / n,
                  sum(c.cached for c in late) / late_prompt, sum(c.cached_openai for c in late) / late_prompt,
                  billed / n)


def print_variants(results: dict[str, list[TurnStat]], cached_price: float) -> None:
    naive = totals(results[NAIVE], cached_price)
    header = (f"{'variant':<18} {'tokens/turn':>11} {'reply':>6} {'summary':>7} {'vs naive':>8} {'p50':>6} "
              f"{'p95':>6} {'max':>6} {'calls/turn':>10} {'intent calls':>12} {'cacheable':>9} {'openai':>6} "
              f"{'billed/turn':>11} {'billed vs naive':>15} {'hist msgs':>9}")
    print(header)
    print("-" * len(header))
    for label, stats in results.items():
        t = totals(stats, cached_price)
        tokens = [s.prompt_tokens + s.summary_tokens for s in stats]
        intent_calls = sum(1 for s in stats for c in s.calls if c.purpose == "intent")
        print(f"{label:<18} {t.per_turn:>11.0f} {t.chat_per_turn:>6.0f} {t.per_turn - t.chat_per_turn:>7.0f} "
              f"{t.per_turn / naive.per_turn:>8.0%} {statistics.median(tokens):>6.0f} {pct(tokens, 95):>6.0f} "
              f"{max(tokens):>6} {t.calls_per_turn:>10.2f} {intent_calls:>12} {t.cacheable:>9.0%} "
              f"{t.cacheable_openai:>6.0%} {t.billed:>11.0f} {t.billed / naive.billed:>15.0%} "
              f"{stats[-1].history_used:>9}")


def print_growth(results: dict[str, list[TurnStat]]) -> None:
    """Mean prompt tokens per turn (summaries included) in blocks of 20 turns."""
    labels = list(results)
    header = f"{'turns':<8}" + "".join(f"{label:>20}" for label in labels)
    print(header)
    print("-" * len(header))
    n = len(results[labels[0]])
    for start in range(0, n, 20):
        means = [statistics.mean(s.prompt_tokens + s.summary_tokens for s in results[label][start:start + 20])
                 for label in labels]
        print(f"{start + 1:>3}-{min(n, start + 20):<4}" + "".join(f"{m:>20.0f}" for m in means))


def print_intents(results: dict[str, list[TurnStat]]) -> None:
    """By the default variant's intent: tools offered, model calls and reply prompt tokens per turn."""
    labels = list(results)
    header = f"{'intent':<10} {'turns':>5}" + "".join(f"{label[:16]:>18}" for label in labels)
    print("reply prompt tokens per turn (tools offered, model calls) by intent of the default variant")
    print(header)
    print("-" * len(header))
    base = results[DEFAULT]
    for intent in ["smalltalk", "db", "http", "mixed", "unknown", "all"]:
        idx = [i for i, s in enumerate(base) if intent == "all" or s.intent == intent]
        if not idx:
            continue
        cells = []
        for label in labels:
            picked = [results[label][i] for i in idx]
            cells.append(f"{statistics.mean(s.prompt_tokens for s in picked):>6.0f} "
                         f"({statistics.mean(s.tools_offered for s in picked):.1f}, "
                         f"{statistics.mean(s.llm_calls for s in picked):.1f})")
        print(f"{intent:<10} {len(idx):>5}" + "".join(f"{c:>18}" for c in cells))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="times the 60-turn script is played (a day apart)")
    ap.add_argument("--cached-price", type=float, default=0.25,
                    help="price of a cached prompt token as a share of an uncached one (DeepSeek ~0.26, OpenAI 0.5)")
    args = ap.parse_args()
    logging.disable(logging.WARNING)  # the tool calls to 127.0.0.1:9 fail on purpose; keep the output a table

    with bench_server() as base:
        run(base, args)


def _play(tenants, turns, title: str) -> dict[str, list[TurnStat]]:
    results: dict[str, list[TurnStat]] = {}
    for label, (tenant, dsn) in tenants.items():
        t0 = time.perf_counter()
        results[label] = run_conversation(tenant, dsn, turns)
        print(f"  {title}: ran {label:<18} in {time.perf_counter() - t0:5.1f}s")
    return results


def run(base: str, args) -> None:
    tenants = make_tenants(base)
    recall_tenants = make_tenants(base)
    for tenant, _ in [*tenants.values(), *recall_tenants.values()]:
        migrate_tenant(tenant)
    registry = build_registry(next(iter(tenants.values()))[0])
    db_schemas = estimate_tools(registry.openai_schemas(registry.names(group="db")))
    http_schemas = estimate_tools(registry.openai_schemas(registry.names(group="http")))
    turns = script(args.rounds)
    cfg = tenants[DEFAULT][0].config
    print(f"{len(turns)} user turns ({args.rounds} x {len(CONVERSATION)}-turn script), MockProvider (prompt tokens ~ "
          f"chars/4 of messages + tool schemas), {len(registry)} tools: {len(registry.names(group='db'))} db "
          f"(~{db_schemas} tokens of schemas), {len(registry.names(group='http'))} http (~{http_schemas});\n"
          f"default: history budget {cfg.history_budget_tokens} tokens (small talk {cfg.smalltalk_history_tokens}), "
          f"summary <= {cfg.summary_max_tokens}, max_context_tokens {cfg.max_context_tokens}; naive: no gating, "
          f"{UNBUDGETED:,}-token budgets, no summary (history read: last {HISTORY_ROWS} messages); cached tokens "
          f"billed at {args.cached_price:.2f}\n")
    results = _play(tenants, turns, "script")
    recall = _play(recall_tenants, script(args.rounds, recall=True), "recall")
    print("\nPer turn over the script (tokens: prompt tokens of the reply's calls + summary updates; cacheable: "
          "share of prompt tokens after turn 10 that\nrepeat a request of the last hour by prefix, 64-token blocks; "
          "openai: >= 1024 tokens, 128-token blocks; billed: tokens with cached ones at the cached price):")
    print_variants(results, args.cached_price)
    print("\nMean prompt tokens per turn (summaries included), by block of 20 turns:")
    print_growth(results)
    print()
    print_intents(results)
    default = results[DEFAULT]
    small = [s.prompt_tokens for s in default if s.intent == "smalltalk"]
    print(f"\nsmall talk (default): {len(small)} turns, mean {statistics.mean(small):.0f}, max {max(small)} "
          "prompt tokens")
    print(f"\nRecall at turn {len(turns)}: turn 5 said {FACT!r} (no tool saves it); turn {len(turns)} asks "
          f"{QUESTION!r}")
    for label, stats in recall.items():
        answer = stats[-1].answer
        print(f"  {label:<18} {'correct' if 'Lisbon' in answer else 'WRONG  '}  {answer[:90]!r}")
    if os.environ.get("BENCH_TOKENS_DUMP"):
        Path(os.environ["BENCH_TOKENS_DUMP"]).write_text(json.dumps(
            {k: [{**s.__dict__, "calls": [c.__dict__ for c in s.calls]} for s in v] for k, v in results.items()},
            indent=1))
    t, naive = totals(default, args.cached_price), totals(results[NAIVE], args.cached_price)
    print(f"\nprompt tokens vs naive: {100 * t.per_turn / naive.per_turn:.0f} %")
    print(f"model calls per turn: {t.calls_per_turn:.1f}")


if __name__ == "__main__":
    main()
