"""Prompt tokens per turn with and without tool gating and the history budget, over a scripted conversation.

One user talks to the bot through a 60-turn script (greetings, thanks, saving events, reminders, schedule
questions, weather questions, chit-chat, questions about earlier things), played `--rounds` times (default 3,
one day apart: 180 turns; the default 3000-token budget only starts to bind after about 60 short turns).
It runs through the real engine (`shared.conversation.engine.respond`) against four tenants that differ only in two settings:

- `config.tool_gating` true/false: the orchestrator exposes only the tools of the agents that can handle the
  intent (small talk: none), or every enabled tool on every turn;
- `config.max_context_tokens` 3000 (the default) or 1,000,000 (in effect no history budget).

Each tenant has its own PostgreSQL database migrated with `migrate_tenant`; every turn runs in one transaction
(the user message is stored, the engine answers, usage and the reply are stored, then commit), so history and
saved items grow as in production. The model is `MockProvider`, whose prompt tokens are estimated from the
messages and the tool schemas it is sent; a turn's prompt tokens are the sum over its LLM calls (intent
classification included). History is read as `shared.conversation.turn` reads it (at most HISTORY_ROWS = 200 messages),
so without a budget the prompt stops growing after 100 turns. The tenant's one HTTP tool (get_weather) points
at 127.0.0.1:9: it is offered, and calls to it fail fast, which is fine for counting prompt tokens.

Usage:  .venv/bin/python bench/bench_tokens.py [--rounds 3] [--budget 3000]
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
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg  # noqa: E402
from psycopg.conninfo import make_conninfo  # noqa: E402
from psycopg.rows import dict_row  # noqa: E402

from benchdb import bench_server
from shared.db import messages, users  # noqa: E402
from shared.db.usage import record_usage  # noqa: E402
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
VARIANTS = [  # (label, tool_gating, history budget on)
    ("gated+budget", True, True),
    ("ungated+budget", False, True),
    ("gated, no budget", True, False),
    ("ungated, no budget", False, False),
]


@dataclass
class TurnStat:
    text: str
    intent: str
    prompt_tokens: int
    llm_calls: int
    tools_offered: int
    history_used: int


def make_tenants(base: str, budget: int) -> dict[str, tuple[Tenant, str]]:
    """The four variant tenants (label -> (tenant, dsn)), each with its own fresh database."""
    env = {"REDIS_URL": "redis://127.0.0.1:1/0", "WEBHOOK_VERIFY_TOKEN": "bench", "INFOBIP_BASE_URL":
           "http://127.0.0.1:1", "INFOBIP_API_KEY": "bench", "LLM_PROVIDER": "mock"}
    settings = load_settings(env, dotenv=False)
    docs, dsns = [], {}
    for i, (label, gating, budgeted) in enumerate(VARIANTS):
        tid = f"tokens{i}"
        dsns[tid] = make_conninfo(base, dbname=f"bench_tokens_{i}_{uuid.uuid4().hex[:6]}")
        docs.append({"tenant_id": tid, "waba_number": f"+1 555 010{i}", "db_dsn": dsns[tid],
                     "embedding_model": "local-hash", "vector_store": "pgvector",
                     "enabled_agents": ["orchestrator", "db_agent", "http_agent"], "http_tools": [WEATHER_TOOL],
                     "config": {"business_name": "Demo Dental Clinic", "timezone": "Europe/London",
                                "rag_enabled": True, "tool_gating": gating, "debounce_ms": 0,
                                "max_context_tokens": budget if budgeted else UNBUDGETED}})
    registry = parse_tenants({"tenants": docs}, settings, {})
    return {label: (registry.require(f"tokens{i}"), dsns[f"tokens{i}"]) for i, (label, _, _) in enumerate(VARIANTS)}


def gating_setting(tenant: Tenant) -> bool:
    """The tool_gating switch as the orchestrator reads it (typed field if the config has one, else extra)."""
    typed = getattr(tenant.config, "tool_gating", None)
    return bool(typed) if isinstance(typed, bool) else bool(tenant.config.extra.get("tool_gating", True))


def script(rounds: int) -> list[tuple[datetime, str]]:
    """(time, text) of every turn: the conversation `rounds` times, each round one day after the previous."""
    return [(START + timedelta(days=r, minutes=MINUTES_PER_TURN * i), text)
            for r in range(rounds) for i, text in enumerate(CONVERSATION)]


def run_conversation(tenant: Tenant, dsn: str, turns: list[tuple[datetime, str]]) -> list[TurnStat]:
    """Drive the script through the real engine, one committed transaction per turn."""
    llm = MockProvider()
    registry = build_registry(tenant)
    memory = MemoryStore(tenant)
    stats: list[TurnStat] = []
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        with conn.transaction():
            user_id = users.upsert_user(conn, "15550001111", "Bench User", START)
        for i, (now, text) in enumerate(turns):
            request_id = f"req_bench_{i}"
            with conn.transaction():
                row = messages.insert_inbound(conn, user_id=user_id,
                                              infobip_message_id=f"bench-{tenant.tenant_id}-{i}",
                                              message_type="TEXT", body=text, payload={"type": "TEXT", "text": text},
                                              received_at=now, request_id=request_id)
                history = messages.recent_history(conn, user_id, HISTORY_ROWS, before_id=row)
                answer = respond(tenant=tenant, conn=conn, llm=llm, registry=registry, memory=memory,
                                 user_id=user_id, phone="15550001111", text=text, history=history, now=now,
                                 clock=lambda now=now: now, request_id=request_id)
                for call in answer.calls:
                    record_usage(conn, user_id=user_id, request_id=request_id, provider=call.provider,
                                 model=call.model, prompt_tokens=call.prompt_tokens,
                                 completion_tokens=call.completion_tokens, latency_ms=call.latency_ms,
                                 tools_used=list(call.tools_used))
                messages.insert_assistant_message(conn, user_id=user_id, body=answer.text, reply_to=row,
                                                  request_id=request_id)
                messages.set_status(conn, row, "answered")
            stats.append(TurnStat(text, answer.intent.name, sum(c.prompt_tokens for c in answer.calls),
                                  len(answer.calls), len(answer.response.tools_offered), answer.history_used))
    return stats


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def print_variants(results: dict[str, list[TurnStat]]) -> None:
    base_total = sum(s.prompt_tokens for s in results[VARIANTS[0][0]])
    base_last = sum(s.prompt_tokens for s in results[VARIANTS[0][0]][-10:])
    header = (f"{'variant':<20} {'mean':>6} {'p50':>6} {'p95':>6} {'max':>6} {'last10':>7} {'total':>7} "
              f"{'x total':>8} {'x last10':>9}  {'calls':>5}  {'hist msgs (last turn)':>21}")
    print(header)
    print("-" * len(header))
    for label, stats in results.items():
        tokens = [s.prompt_tokens for s in stats]
        last10, total = sum(tokens[-10:]), sum(tokens)
        print(f"{label:<20} {statistics.mean(tokens):>6.0f} {statistics.median(tokens):>6.0f} "
              f"{pct(tokens, 95):>6.0f} {max(tokens):>6} {last10:>7} {total:>7} {total / base_total:>7.2f}x "
              f"{last10 / base_last:>8.2f}x  {sum(s.llm_calls for s in stats):>5}  {stats[-1].history_used:>21}")


def print_growth(results: dict[str, list[TurnStat]]) -> None:
    """Mean prompt tokens per turn in blocks of 20 turns: how the cost grows with the conversation."""
    labels = list(results)
    header = f"{'turns':<8}" + "".join(f"{label:>20}" for label in labels) + f"{'no budget / budget':>20}"
    print(header)
    print("-" * len(header))
    n = len(results[labels[0]])
    for start in range(0, n, 20):
        means = [statistics.mean(s.prompt_tokens for s in results[label][start:start + 20]) for label in labels]
        ratio = means[2] / means[0]
        print(f"{start + 1:>3}-{min(n, start + 20):<4}" + "".join(f"{m:>20.0f}" for m in means) + f"{ratio:>19.2f}x")


def print_intents(gated: list[TurnStat], ungated: list[TurnStat], title: str) -> None:
    print(title)
    header = (f"{'intent':<10} {'turns':>5} {'tools gated':>11} {'tools ungated':>13} {'gated mean':>10} "
              f"{'ungated mean':>12} {'saved/turn':>10} {'ungated/gated':>13}")
    print(header)
    print("-" * len(header))
    order = ["smalltalk", "db", "http", "mixed", "unknown"]
    for intent in order + ["all"]:
        idx = [i for i, s in enumerate(gated) if intent == "all" or s.intent == intent]
        if not idx:
            continue
        g = statistics.mean(gated[i].prompt_tokens for i in idx)
        u = statistics.mean(ungated[i].prompt_tokens for i in idx)
        tg = statistics.mean(gated[i].tools_offered for i in idx)
        tu = statistics.mean(ungated[i].tools_offered for i in idx)
        print(f"{intent:<10} {len(idx):>5} {tg:>11.1f} {tu:>13.1f} {g:>10.0f} {u:>12.0f} {u - g:>10.0f} "
              f"{u / g:>12.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="times the 60-turn script is played (a day apart)")
    ap.add_argument("--budget", type=int, default=3000, help="max_context_tokens of the budgeted variants")
    args = ap.parse_args()
    logging.disable(logging.WARNING)  # the tool calls to 127.0.0.1:9 fail on purpose; keep the output a table

    with bench_server() as base:
        run(base, args)


def run(base: str, args) -> None:
    tenants = make_tenants(base, args.budget)
    for tenant, _ in tenants.values():
        migrate_tenant(tenant)
    registry = build_registry(next(iter(tenants.values()))[0])
    db_schemas = estimate_tools(registry.openai_schemas(registry.names(group="db")))
    http_schemas = estimate_tools(registry.openai_schemas(registry.names(group="http")))
    switch = {label: gating_setting(t) for label, (t, _) in tenants.items()}
    turns = script(args.rounds)
    print(f"{len(turns)} user turns ({args.rounds} x {len(CONVERSATION)}-turn script), MockProvider "
          "(prompt tokens ~ chars/4 of messages + tool schemas), "
          f"{len(registry)} tools: {len(registry.names(group='db'))} db (~{db_schemas} tokens of schemas), "
          f"{len(registry.names(group='http'))} http (~{http_schemas});\nhistory budget "
          f"{args.budget} tokens vs {UNBUDGETED:,} (history read: last {HISTORY_ROWS} messages); "
          "tool_gating as read: "
          + ", ".join(f"{k}={v}" for k, v in switch.items()) + "\n")
    results: dict[str, list[TurnStat]] = {}
    for label, (tenant, dsn) in tenants.items():
        t0 = time.perf_counter()
        results[label] = run_conversation(tenant, dsn, turns)
        print(f"  ran {label:<20} in {time.perf_counter() - t0:5.1f}s")
    print()
    gated, ungated = results["gated+budget"], results["ungated+budget"]
    if [s.tools_offered for s in gated] == [s.tools_offered for s in ungated]:
        print("WARNING: tool_gating=false had no effect (same tools offered on every turn): the switch is not "
              "wired; the gating columns below are not a comparison.\n")
    print("Prompt tokens per turn (sum over the turn's LLM calls), ratios to gated+budget:")
    print_variants(results)
    print("\nMean prompt tokens per turn, by block of 20 turns:")
    print_growth(results)
    print()
    print_intents(gated, ungated, "Gating by intent (history budget on): tools offered and prompt tokens per turn")
    print()
    print_intents(results["gated, no budget"], results["ungated, no budget"],
                  "Gating by intent (no history budget)")
    if os.environ.get("BENCH_TOKENS_DUMP"):
        Path(os.environ["BENCH_TOKENS_DUMP"]).write_text(json.dumps(
            {k: [s.__dict__ for s in v] for k, v in results.items()}, indent=1))


if __name__ == "__main__":
    main()
