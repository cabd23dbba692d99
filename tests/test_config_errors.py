"""Operator-facing input errors outside the settings and tenants files: `wabot chat --user`, and the sandbox's
`_sandbox/messages` control endpoint that `wabot chat` polls (it must never skip a reply)."""
from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest
import requests

from helpers import NUMBERS, WEBHOOK_TOKEN, new_user
from devtools import cli
from devtools.devstack import ROOT
from devtools.sandbox import InfobipSandbox


def test_chat_refuses_a_user_that_is_not_a_phone_number(capsys):
    assert cli.main(["chat", "--user", "me", "--url", "http://127.0.0.1:1", "--sandbox", "http://127.0.0.1:1",
                     "--token", "t"]) == 2
    err = capsys.readouterr().err
    assert "--user must be a phone number" in err


def test_chat_normalises_the_user_number_and_reads_the_reply(tmp_path, stack_env, web, worker, sandbox):
    """`--user "+1 555 ..."`: the webhook gets the digits, and the reply sent to them is read back."""
    digits = new_user()
    spelled = f"+{digits[0]} {digits[1:4]} {digits[4:8]}-{digits[8:]}"
    (tmp_path / "dev.json").write_text(json.dumps({
        "app_url": web, "sandbox_url": sandbox.url, "webhook_token": WEBHOOK_TOKEN,
        "tenants": [{"tenant_id": "alpha", "waba_number": NUMBERS["alpha"]}]}))
    env = {**stack_env, "WABOT_DATA_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "devtools.cli", "chat", "--user", spelled, "--timeout", "60"],
                          input="hello\n", env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"as +{digits}." in done.stdout
    assert "bot> " in done.stdout, done.stdout + done.stderr
    sent = [r for r in sandbox.requests(path="/whatsapp/1/message/text") if r["json"].get("to") == digits]
    assert sent, "the bot answered the normalised number"


def test_sandbox_messages_never_skips_a_reply_recorded_while_it_answers():
    """Poll the way `wabot chat` does (since = the last answer's last_seq) while sends arrive from other threads:
    every message is seen exactly once."""
    box = InfobipSandbox().start()
    try:
        total, senders = 600, 3

        def send(worker: int) -> None:
            with requests.Session() as s:
                for i in range(total // senders):
                    s.post(f"{box.url}/whatsapp/1/message/text",
                           json={"from": "1", "to": "15550001111", "content": {"text": f"{worker}-{i}"}}, timeout=10)

        threads = [threading.Thread(target=send, args=(w,)) for w in range(senders)]
        for t in threads:
            t.start()
        seen: list[str] = []
        since = 0
        with requests.Session() as s:
            while True:
                running = any(t.is_alive() for t in threads)
                # Everything recorded is a text send: last_seq must be the seq of the last message of the same
                # snapshot (a whole-history read takes long enough for sends to land in between).
                everything = s.get(f"{box.url}/_sandbox/messages", timeout=10).json()
                if everything["messages"]:
                    assert everything["messages"][-1]["seq"] == everything["last_seq"]
                data = s.get(f"{box.url}/_sandbox/messages", params={"to": "15550001111", "since": since},
                             timeout=10).json()
                seen += [m["text"] for m in data["messages"]]
                assert all(m["seq"] <= data["last_seq"] for m in data["messages"])
                since = max(since, data["last_seq"])
                if not running and not data["messages"]:
                    break
        for t in threads:
            t.join()
        assert len(seen) == total and len(set(seen)) == total
    finally:
        box.stop()


def test_a_deepseek_tenant_on_the_sql_fallback_needs_no_embedding_key(stack_env, monkeypatch, settings):
    """DeepSeek has no embeddings API; a tenant that never embeds must still start."""
    for key in ("REDIS_URL", "WEBHOOK_VERIFY_TOKEN", "TENANTS_FILE", "LLM_PROVIDER"):
        monkeypatch.setenv(key, stack_env[key])
    monkeypatch.delenv("EMBEDDING_API_KEY", raising=False)
    from shared.errors import ConfigError
    from shared.config.tenants import parse_tenants
    from workers.runtime import Runtime

    doc = {"tenant_id": "ds", "waba_number": "+1 555 0177", "db_dsn": "postgresql://u@h/ds",
           "embedding_model": "text-embedding-3-small", "llm": {"provider": "deepseek", "api_key": "ds-key"}}
    fallback = parse_tenants({"tenants": [{**doc, "vector_store": "sql_fallback"}]}, settings, {})
    Runtime(settings=settings, tenants=fallback).check()  # starts
    vector = parse_tenants({"tenants": [doc]}, settings, {})
    with pytest.raises(ConfigError, match="tenant ds"):
        Runtime(settings=settings, tenants=vector).check()  # would embed: needs a key, says so at start-up
