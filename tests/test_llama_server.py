"""Our OpenAI-compatible provider and embedder against a real llama.cpp server (tests/llama_server.py).

The model (gemma 3 270M) is a base model: its words mean nothing, so these tests check only the plumbing: that
offered tools reach the prompt, that a forced call of every built-in tool passes the server's grammar and comes
back as a tool call with JSON arguments, that the answer to it is accepted, that the vectors have the right
shape, and that our token estimate is not below the server's real count. Every call is capped at a few tokens.
"""
from __future__ import annotations

import json
import math

import openai
import pytest

from llama_server import llama_server, setup_timeout  # noqa: F401 (the fixture)
from shared.config.settings import load_settings
from shared.config.tenants import parse_tenants
from shared.conversation.tokens import estimate_text
from shared.llm.base import LLMError
from shared.llm.openai_compat import OpenAICompatProvider
from shared.memory.embedders import OpenAICompatEmbedder
from shared.tools.registry import build_registry, builtin_tools

pytestmark = [pytest.mark.llama, pytest.mark.timeout(setup_timeout())]

# Greedy decoding (temperature 0) keeps the answers the same from run to run. A forced call of set_reminder takes
# 63 tokens: a smaller cap cuts its arguments mid-JSON (the server still says finish_reason "tool_calls").
MAX_TOKENS = 96
BUILTIN = [t.name for t in builtin_tools()]
MESSAGES = [{"role": "system", "content": "You are the assistant of a dental clinic. Use the tools."},
            {"role": "user", "content": "Remember my dentist appointment tomorrow at 2 PM."}]
SETTINGS = load_settings({"REDIS_URL": "redis://127.0.0.1/0", "WEBHOOK_VERIFY_TOKEN": "t",
                          "INFOBIP_BASE_URL": "https://x.api.infobip.com", "INFOBIP_API_KEY": "k",
                          "DATABASE_URL_DEFAULT": "postgresql://u@127.0.0.1:5432/postgres"}, dotenv=False)


@pytest.fixture(scope="module")
def schemas() -> list[dict]:
    """Every built-in tool of a tenant, as its registry offers them to a model (full JSON Schemas)."""
    doc = {"tenant_id": "llama", "waba_number": "+1 555 0100", "db_dsn": "postgresql://u@127.0.0.1/llama",
           "embedding_model": "local-hash", "enabled_agents": ["orchestrator", "db_agent"],
           "config": {"business_name": "Llama Dental", "timezone": "UTC"}}
    registry = build_registry(parse_tenants({"tenants": [doc]}, SETTINGS, {}).require("llama"))
    return registry.openai_schemas(BUILTIN)


@pytest.fixture
def llm(llama_server) -> OpenAICompatProvider:  # noqa: F811
    return OpenAICompatProvider(name="llamacpp", base_url=f"{llama_server.url}/v1", model="gemma",
                                max_tokens=MAX_TOKENS, timeout=60, max_retries=0)


@pytest.fixture
def sent(monkeypatch) -> list[dict]:
    """What each chat request carried (`request`) and how the server answered it (`status`, `usage`)."""
    calls: list[dict] = []
    original = openai.resources.chat.completions.Completions.create

    def create(self, **kwargs):
        record = {"request": kwargs, "status": None, "usage": None}
        calls.append(record)
        try:
            resp = original(self, **kwargs)
        except openai.APIStatusError as exc:
            record["status"] = exc.status_code
            raise
        record["status"], record["usage"] = 200, resp.usage
        return resp

    monkeypatch.setattr(openai.resources.chat.completions.Completions, "create", create)
    return calls


def forced(name: str) -> dict:
    return {"type": "function", "function": {"name": name}}


def keys_in(schema) -> set[str]:
    if isinstance(schema, dict):
        return set(schema) | {k for v in schema.values() for k in keys_in(v)}
    if isinstance(schema, list):
        return {k for v in schema for k in keys_in(v)}
    return set()


def answer(llm: OpenAICompatProvider, messages: list[dict], **kwargs) -> None:
    """One chat call; a base model may answer nothing, twice (an LLMError without an HTTP status): that is fine."""
    try:
        llm.chat(messages, temperature=0.0, **kwargs)
    except LLMError as exc:
        assert exc.status is None, exc


def test_offered_tools_reach_the_prompt(llm, schemas, sent):
    answer(llm, MESSAGES)
    answer(llm, MESSAGES, tools=schemas)
    plain, with_tools = sent[0], next(r for r in sent if "tools" in r["request"])
    assert "tools" not in plain["request"] and with_tools["request"]["tool_choice"] == "auto"
    assert plain["status"] == with_tools["status"] == 200
    grown = with_tools["usage"].prompt_tokens - plain["usage"].prompt_tokens
    assert grown > 50 * len(schemas), (plain["usage"], with_tools["usage"])  # tools dropped: it would not grow


@pytest.mark.parametrize("name", BUILTIN)
def test_a_forced_call_of_every_builtin_tool_passes_the_grammar_and_its_result_is_taken(
        llm, schemas, sent, llama_server, name):  # noqa: F811
    # Only the forced tool is offered: the server builds its grammar from that one schema either way, and a
    # shorter prompt keeps the tier fast (every schema at once, in "auto" mode, is the test above).
    offered = [s for s in schemas if s["function"]["name"] == name]
    result = llm.chat(MESSAGES, tools=offered, tool_choice=forced(name), temperature=0.0)
    assert llama_server.answers(), llama_server.log()[-2000:]
    assert [c.name for c in result.tool_calls] == [name]
    call = result.tool_calls[0]
    assert isinstance(json.loads(call.arguments), dict), call.arguments

    follow_up = [*MESSAGES,
                 {"role": "assistant", "content": None, "tool_calls": [
                     {"id": call.id, "type": "function", "function": {"name": name, "arguments": call.arguments}}]},
                 {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"ok": True, "id": 1})}]
    # The follow-up goes without tools: in "auto" mode llama-cpp-python generates function bodies without
    # max_tokens and loops while the model keeps naming tools, and a base model that now reads the result (sent
    # as a user message, the template drops `tool` messages) does: the server would spin for minutes.
    answer(llm, follow_up)
    assert [r["status"] for r in sent] == [200] * len(sent)
    assert sent[1]["request"]["messages"][2]["content"] == ""  # never null: llama.cpp answers 500 to it
    assert llama_server.answers(), llama_server.log()[-2000:]


def test_the_full_upsert_schema_is_simplified_before_it_reaches_the_server(llm, schemas, sent):
    """The full schema (maxLength 4000 ...) overflows the server's grammar converter and crashes the server, which
    would take the other tests with it; so only what we send is checked here."""
    upsert = [s for s in schemas if s["function"]["name"] == "upsert_item"]
    assert {"maxLength", "minLength"} <= keys_in(upsert)
    llm.chat(MESSAGES, tools=upsert, tool_choice=forced("upsert_item"), temperature=0.0)
    offered = keys_in(sent[0]["request"]["tools"])
    assert not offered & {"maxLength", "minLength", "pattern", "maximum", "minimum"}, offered
    assert {"properties", "required", "enum"} <= offered


def test_embeddings_are_pooled_into_one_vector_per_text(llama_server):  # noqa: F811
    texts = ["Dentist appointment tomorrow at 2 PM", "call mom", "Записаться к врачу"]
    raw = OpenAICompatProvider(name="llamacpp", base_url=f"{llama_server.url}/v1", model="gemma",
                               embed_model="gemma").embed(texts)
    assert all(len(per_text) > 1 and len(per_text[0]) == 640 for per_text in raw)  # the server: one per token

    embedder = OpenAICompatEmbedder(provider="llamacpp", model="gemma", dim=640, api_key="not-needed",
                                    base_url=f"{llama_server.url}/v1")
    vectors = embedder.embed(texts)
    assert [len(v) for v in vectors] == [640] * len(texts)
    assert all(math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, rel_tol=1e-6) for v in vectors)
    assert vectors[0] != vectors[1]


LATIN = ("Hello! I would like to book a cleaning next week, preferably on Tuesday or Wednesday morning before "
         "ten o'clock. My last visit was in March and the hygienist said I should come back within six months. "
         "Also, could you remind me the day before? I often forget appointments when work gets busy. Thanks a lot, "
         "and please tell me if I need to bring my insurance card or anything else with me.")
CHINESE = ("您好！我想预约下周的洗牙，最好是星期二或星期三上午十点以前。我上次看牙是在三月份，医生说我应该在六个月内再来复查。"
           "另外，能不能在前一天提醒我一下？工作忙的时候我经常忘记预约。请问我需要带医保卡或者其他证件吗？如果上午没有空位，"
           "下午四点以后也可以。我的牙齿最近有点敏感，喝冷水的时候会疼，不知道是不是需要做进一步的检查。上次补的那颗牙好像也有点松动，"
           "吃东西的时候不太舒服。我女儿今年八岁，也想给她做一次全面的口腔检查，顺便问一下儿童涂氟的费用是多少。我们家住得比较远，"
           "开车大概需要四十分钟，所以希望能把两个人的预约安排在同一天。如果需要提前付定金，请告诉我付款方式。另外，我想了解一下你们"
           "诊所的停车情况，附近有没有免费的停车场？周末是否营业？节假日的营业时间有没有变化？我还想问问美白牙齿的价格和效果能保持多久，"
           "做完以后有没有需要注意的饮食禁忌。谢谢您的耐心解答，期待您的回复。祝您工作顺利，身体健康！我的手机号码就是这个号码，"
           "有任何变动请随时通过微信或者短信联系我。再次感谢！顺便说一下，我对青霉素过敏，看诊之前请医生留意。如果医生需要我提前空腹或者停用某些药物，也请提前告诉我，我会按照要求准备好。")
RUSSIAN = ("Здравствуйте! Я хотел бы записаться на чистку зубов на следующей неделе, желательно во вторник или в среду "
           "утром до десяти часов. В последний раз я был у вас в марте, и гигиенист сказал, что нужно прийти снова "
           "в течение шести месяцев. Не могли бы вы напомнить мне об этом накануне? Спасибо большое!")
EMOJI = "🦷😀👍🎉❤️🙏😂🔥✨🥳 " * 10 + "👨‍👩‍👧‍👦🏳️‍🌈🇬🇧🇯🇵"


@pytest.mark.parametrize("text", [
    pytest.param(LATIN, id="latin"),
    pytest.param(CHINESE, id="chinese"),
    pytest.param(RUSSIAN, id="russian"),
    pytest.param(EMOJI, id="emoji"),
])
def test_the_token_estimate_is_not_below_the_servers_count(llama_server, record_property, text):  # noqa: F811
    real = llama_server.tokenize(text) - llama_server.tokenize("")  # without the BOS token
    estimate = estimate_text(text)
    record_property("tokens", {"chars": len(text), "server": real, "estimate": estimate})
    print(f"chars={len(text)} server={real} estimate={estimate}")
    assert estimate >= real, f"estimate_text says {estimate} tokens, the server counts {real} ({len(text)} chars)"


def test_a_tool_result_reaches_the_model_although_the_template_drops_tool_messages(llm, sent):
    """chatml-function-calling renders system, user and assistant messages only: the result goes as a user
    message naming the tool, so a longer result makes a longer prompt."""
    call = {"id": "call_1", "type": "function", "function": {"name": "list_events", "arguments": "{}"}}

    def follow_up(result: str) -> int:
        sent.clear()
        answer(llm, [*MESSAGES, {"role": "assistant", "content": None, "tool_calls": [call]},
                     {"role": "tool", "tool_call_id": "call_1", "content": result}])
        return sent[0]["usage"].prompt_tokens

    short = follow_up('{"events": []}')
    long = follow_up(json.dumps({"events": [{"title": f"Dentist visit number {i}", "starts_at": "2026-12-0{i}"}
                                            for i in range(1, 9)]}))
    assert long > short + 50, (short, long)
    assert sent[0]["request"]["messages"][-1]["content"].startswith("[result of list_events] ")
