"""`wabot chat` (devtools/cli.py): by default a playground user through the real webhook; it waits for each
message's turn to commit and prints every message the bot wrote for it, whole (a reply Infobip would get in parts
included), then answers the next line; nothing reaches Infobip for that user."""
from __future__ import annotations

import json
import re
import subprocess
import sys

from helpers import NUMBERS, WEBHOOK_TOKEN, new_user
from devtools.devstack import ROOT
from shared.db.users import playground_phone


def _chat(tmp_path, stack_env, web, lines: list[str], *argv: str) -> subprocess.CompletedProcess:
    (tmp_path / "dev.json").write_text(json.dumps({
        "app_url": web, "webhook_token": WEBHOOK_TOKEN,
        "tenants": [{"tenant_id": t, "waba_number": NUMBERS[t]} for t in ("alpha", "gamma")]}))
    env = {**stack_env, "WABOT_DATA_DIR": str(tmp_path)}
    return subprocess.run([sys.executable, "-m", "devtools.cli", "chat", *argv, "--timeout", "60"],
                          input="".join(f"{line}\n" for line in lines), env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=240)


def _replies(stdout: str) -> list[str]:
    """What followed each `bot> ` up to the next prompt (a reply may span lines)."""
    return re.findall(r"bot> (.*?)(?=\nyou> |\Z)", stdout, re.S)


def test_chat_prints_a_multi_part_reply_whole_and_answers_several_messages_in_a_row(tmp_path, stack_env, web, worker,
                                                                                    sandbox, fake_openai, db):
    long_reply = " ".join(f"Sentence number {i} of a long answer." for i in range(300))  # ~11,000 chars: 3 parts
    assert len(long_reply) > 2 * 4096
    fake_openai.script({"content": long_reply})  # gamma's model: its next answer ("hello" needs no tools)
    name = f"t{tmp_path.name[-12:]}"
    done = _chat(tmp_path, stack_env, web, ["hello", "Remember I have a dentist appointment tomorrow at 2 PM",
                                            "What do I have scheduled tomorrow?"],
                 "--tenant", "gamma", "--name", name)
    assert done.returncode == 0, done.stderr
    phone = playground_phone(f"cli:{name}")
    assert f"as +{phone} (playground" in done.stdout
    bot = _replies(done.stdout)
    assert len(bot) == 3, done.stdout[-2000:] + done.stderr
    assert bot[0] == long_reply  # every part, as one reply, before the next message
    assert bot[1] == "I've saved your dentist appointment for tomorrow at 2 PM as an event."
    assert "Dentist appointment tomorrow at 2 PM" in bot[2]
    assert done.stdout.count("you> ") == 4  # three answered, then end of input
    with db("gamma") as conn:
        sends = conn.execute("SELECT o.status, o.part FROM outbound_messages o JOIN users u ON u.id = o.user_id "
                             "WHERE u.phone = %s AND u.playground ORDER BY o.id", (phone,)).fetchall()
    assert [s["part"] for s in sends] == [1, 2, 3, 1, 1] and {s["status"] for s in sends} == {"delivered"}
    assert not [r for r in sandbox.requests() if phone in repr(r)]


def test_chat_as_a_real_number_still_goes_to_infobip(tmp_path, stack_env, web, worker, sandbox):
    """--user NUMBER: that WhatsApp user, answered through (fake) Infobip; each reply read back from the sandbox."""
    user = new_user()
    done = _chat(tmp_path, stack_env, web, ["hello", "Remember I have a dentist appointment tomorrow at 2 PM"],
                 "--tenant", "alpha", "--user", user, "--sandbox", sandbox.url)
    assert done.returncode == 0, done.stderr
    bot = _replies(done.stdout)
    assert len(bot) == 2 and bot[0].startswith("Hello!"), done.stdout
    assert bot[1] == "I've saved your dentist appointment for tomorrow at 2 PM as an event."
    sent = [r["json"]["content"]["text"] for r in sandbox.requests(path="/whatsapp/1/message/text")
            if r["json"]["to"] == user]
    assert sent == bot
