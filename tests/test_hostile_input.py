"""Hostile input at the webhooks: never a 5xx, a clear 400 naming the field for what no worker could store, and
every result answered as accepted ends stored in its tenant database.

The property test posts hypothesis-mutated Infobip payloads through the Flask app (real Redis) to a real Celery
worker (real PostgreSQL). `WABOT_FUZZ_EXAMPLES=5000` runs it longer than `make test` does.
"""
from __future__ import annotations

import json
import os
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import AUTH, NUMBERS, delivery_report, inbound, infobip_time, new_user, wait_for
from ingress.payload import MAX_DEPTH
from ingress.schemas import MAX_RESULTS, result_kind
from shared.delivery.infobip.times import parse_infobip_time
from shared.delivery.outbox import tenant_of_message_id
from shared.phone import normalize_number

INBOUND_URL, STATUS_URL = "/webhooks/infobip", "/webhooks/infobip/status"
FUZZ_EXAMPLES = int(os.environ.get("WABOT_FUZZ_EXAMPLES") or 300)
RUN = uuid.uuid4().hex[:8]   # every messageId of this session starts with it: no collision with other tests
TENANT = "delta"             # rate-limited to 5 messages a minute per user: the fuzz costs few LLM turns
SENDERS = [new_user() for _ in range(4)]
WHEN = datetime(2031, 5, 6, 7, 8, 9, 123000, tzinfo=timezone.utc)  # a fixed moment: no test reads today's date


def post(client, body=None, raw: bytes | None = None, path: str = INBOUND_URL):
    data = raw if raw is not None else json.dumps(body).encode()
    return client.post(path, data=data, headers=AUTH, content_type="application/json")


def field_errors(resp, *path: str) -> list[str]:
    """The messages the 400 gives for the field at `path` (JSON turns list indexes into "0", "1", ...)."""
    assert resp.status_code == 400, resp.get_data(as_text=True)[:500]
    body = resp.get_json()
    assert set(body) >= {"error", "message", "request_id", "details"}, body
    node = body["details"]
    for part in path:
        assert isinstance(node, dict) and part in node, f"{path} not named in {body['details']}"
        node = node[part]
    if isinstance(node, dict) and list(node) == ["_schema"]:  # a nested object refused as a whole
        node = node["_schema"]
    assert isinstance(node, list) and node and all(isinstance(m, str) for m in node), node
    return node


def one_inbound(**changes) -> dict:
    body = inbound(NUMBERS[TENANT], SENDERS[0], {"type": "TEXT", "text": "hi"}, received_at=WHEN,
                   message_id=f"{RUN}-reg-{uuid.uuid4().hex}")
    body["results"][0].update(changes)
    return body


def one_report(**changes) -> dict:
    body = delivery_report(f"{TENANT}.{RUN}-reg-{uuid.uuid4().hex}", SENDERS[0], "DELIVERED", "DELIVERED_TO_HANDSET")
    body["results"][0].update(changes)
    return body


# ------------------------------------------------------------------------------------------ regressions

def _nest(leaf, depth: int, as_dict: bool):
    for _ in range(depth):
        leaf = {"d": leaf} if as_dict else [leaf]
    return leaf


def raw_inbound(text_json: str) -> bytes:
    """An inbound envelope whose message text is `text_json`, a JSON fragment written by hand (escapes kept)."""
    body = json.dumps(one_inbound()).replace('"text": "hi"', f'"text": {text_json}')
    return body.encode("utf-8", "surrogatepass")


TEXT_FIELD = ("results", "0", "message", "text")


@pytest.mark.parametrize("raw, path, reason", [
    (raw_inbound(r'"a\u0000b"'), TEXT_FIELD, "NUL"),                      # PostgreSQL text and jsonb refuse it
    (raw_inbound(r'"a\ud800b"'), TEXT_FIELD, "lone surrogate"),           # not Unicode: UTF-8 encoding fails
    (raw_inbound(r'"\udfff"'), TEXT_FIELD, "lone surrogate"),
    (raw_inbound(r'{"k\u0000ey": 1}'), TEXT_FIELD + ("k\\u0000ey",), "NUL"),  # in a key
    (raw_inbound(r'["\ud83d\ude00", "\ud83d"]'), TEXT_FIELD + ("1",), "lone surrogate"),  # a pair is fine
    (raw_inbound('{"a": }'), None, "not valid JSON"),
    (raw_inbound("NaN"), None, "NaN"), (raw_inbound("-Infinity"), None, "Infinity"),  # jsonb refuses them
    (raw_inbound("1e999"), None, "too large"),                                         # read as float inf
    (raw_inbound('"caf\xe9"').replace("caf\xe9".encode(), b"caf\xe9"), None, "UTF-8"),  # Latin-1 bytes
    (raw_inbound('"\ud800"'), None, "UTF-8"),                              # a surrogate as raw bytes
    (b"[" * 100_000 + b"]" * 100_000, None, "nests deeper"),               # past Python's recursion limit
    (raw_inbound("1" * 5000), None, "not valid JSON"),                      # past Python's int digit limit
])
def test_bytes_no_worker_could_store_are_400(client, raw, path, reason):
    resp = post(client, raw=raw)
    if path is None:
        assert resp.status_code == 400 and resp.get_json()["error"] == "invalid_json", resp.get_data()[:300]
        assert reason in resp.get_json()["message"]
    else:
        assert reason in field_errors(resp, *path)[0]
        assert resp.get_json()["message"].startswith("results[0].message.text")


def test_lone_surrogate_message_id_is_400_not_500(client):
    raw = json.dumps(one_inbound(messageId="\ud800x")).encode()  # json.dumps writes it as the escape \ud800
    assert b"\\ud800" in raw
    field_errors(post(client, raw=raw), "results", "0", "messageId")


def test_nesting_past_the_limit_names_where(client):
    # `response` sits at depth 4 (envelope, results, result, message): its innermost dict lands at 4 + levels - 1
    def flow_reply(levels: int) -> dict:
        return one_inbound(message={"type": "INTERACTIVE_FLOW_REPLY", "response": _nest("x", levels, True)})

    errors = field_errors(post(client, flow_reply(MAX_DEPTH - 3)), "results", "0", "message", "response",
                          *["d"] * (MAX_DEPTH - 4))
    assert f"deeper than {MAX_DEPTH}" in errors[0]
    # as deep as the limit allows is Infobip's to send, and accepted
    assert post(client, flow_reply(MAX_DEPTH - 4)).status_code == 200


@pytest.mark.parametrize("changes, path", [
    ({"from": "not-a-number"}, ("from",)),
    ({"from": "+1 555 abc 0100"}, ("from",)),
    ({"from": "\u00b2" * 8}, ("from",)),                      # isdigit() is True for superscripts
    ({"from": "\u0661\u0662\u0663\u0664\u0665\u0666"}, ("from",)),  # Arabic-Indic digits
    ({"from": "1234"}, ("from",)), ({"from": "1" * 21}, ("from",)),
    ({"from": 447000000009}, ("from",)),                      # a number, not a string
    ({"to": "our number"}, ("to",)),
    ({"receivedAt": "9999-12-31T23:59:59.999-2359"}, ("receivedAt",)),  # year 10000 in UTC
    ({"receivedAt": "1999-12-31T23:59:59.999+0000"}, ("receivedAt",)),
    ({"receivedAt": "2100-01-01T00:00:00.000+0000"}, ("receivedAt",)),
    ({"receivedAt": "yesterday"}, ("receivedAt",)), ({"receivedAt": 1700000000}, ("receivedAt",)),
    ({"contact": "Bob"}, ("contact",)), ({"contact": ["Bob"]}, ("contact",)),
    ({"contact": {"name": {"first": "Bob"}}}, ("contact", "name")),
    ({"message": {"type": "TEXT", "text": {"body": "hi"}}}, ("message", "text")),
    ({"message": {"type": ["TEXT"]}}, ("message", "type")),
    ({"message": {"type": "LOCATION", "latitude": "north", "longitude": 1}}, ("message", "latitude")),
    ({"message": {"type": "CONTACT", "contacts": [{"name": "Bob"}]}}, ("message", "contacts", "0", "name")),
    ({"message": {"type": "CONTACT", "contacts": [{"phones": [{"phone": 15551234}]}]}},
     ("message", "contacts", "0", "phones", "0", "phone")),
    ({"message": {"type": "CONTACT", "contacts": "Bob"}}, ("message", "contacts")),
    ({"message": "hi"}, ("message",)),
    ({"price": "free"}, ("price",)), ({"price": {"pricePerMessage": "lots"}}, ("price", "pricePerMessage")),
])
def test_inbound_fields_no_worker_could_store_are_400(client, changes, path):
    field_errors(post(client, one_inbound(**changes)), "results", "0", *path)


@pytest.mark.parametrize("changes, path", [
    ({"status": "DELIVERED"}, ("status",)),
    ({"status": {"groupName": 3, "name": "DELIVERED"}}, ("status", "groupName")),
    ({"status": {"groupName": "DELIVERED", "name": ["x"]}}, ("status", "name")),
    ({"error": "none"}, ("error",)),
    ({"error": {"id": [7010], "name": "EC_NO_SESSION"}}, ("error", "id")),
    ({"error": {"id": 7010, "groupName": {"x": 1}}}, ("error", "groupName")),
    ({"error": {"id": 0, "name": 0}}, ("error", "name")),
    ({"sentAt": "31/12/2025"}, ("sentAt",)), ({"doneAt": "9999-12-31T23:59:59.999-2359"}, ("doneAt",)),
    ({"price": [0]}, ("price",)),
])
def test_report_fields_no_worker_could_read_are_400(client, changes, path):
    field_errors(post(client, one_report(**changes), path=STATUS_URL), "results", "0", *path)


def test_seen_report_time_out_of_range_is_400(client):
    body = {"results": [{"messageId": f"{TENANT}.{RUN}-seen", "from": NUMBERS[TENANT], "to": SENDERS[0],
                         "sentAt": infobip_time(WHEN), "seenAt": "10000-01-01T00:00:00.000+0000"}]}
    field_errors(post(client, body, path=STATUS_URL), "results", "0", "seenAt")


def test_batch_past_the_limit_is_400_naming_results(client):
    one = one_inbound()["results"][0]
    body = {"results": [{**one, "messageId": f"{RUN}-big-{i}"} for i in range(MAX_RESULTS + 1)]}
    field_errors(post(client, body), "results")


def test_parser_refuses_out_of_range_times_for_every_caller():
    """No worker path can store year 10000: the shared parser itself reads it as unreadable (the worker then
    uses the time it stores the message)."""
    assert parse_infobip_time("9999-12-31T23:59:59.999-2359") is None
    assert parse_infobip_time("0001-01-01T00:00:00.000+2359") is None
    assert parse_infobip_time("2025-01-01T10:10:00.000-0130") == datetime(2025, 1, 1, 11, 40, tzinfo=timezone.utc)


def test_edge_values_infobip_may_send_are_accepted_and_stored(client, worker, db):
    """Lenient where it costs nothing: nulls, spellings of numbers, the bounds of the time range, unknown fields."""
    edge = [
        {"from": f"+{SENDERS[1][:2]} ({SENDERS[1][2:5]}) {SENDERS[1][5:9]}-{SENDERS[1][9:]}", "contact": None},
        {"from": "00" + SENDERS[1], "receivedAt": "2000-01-01T00:00:00.000+0000", "price": None},
        {"receivedAt": "2099-12-31T23:59:59.999+0000", "contact": {"name": None, "userId": 7}},
        {"receivedAt": "2031-05-06T07:08:09Z", "message": {"type": "TEXT", "text": None, "novelty": [1, {"a": 2}]}},
        {"message": {"type": "CONTACT", "contacts": [{"name": None, "phones": None}, {"org": {}}]}},
        {"message": {"type": "TEXT", "text": "\U0001f600 \u202e \ufeff \uffff \U0010ffff \\u0000 and \u00e9"}},
    ]
    sent = {}
    for changes in edge:
        body = one_inbound(**changes)
        sent[body["results"][0]["messageId"]] = body["results"][0]["message"]
        resp = post(client, body)
        assert resp.status_code == 200 and resp.get_json()["accepted"] == 1, (changes, resp.get_json())
    with db(TENANT) as conn:
        rows = wait_for(lambda: (r := conn.execute("SELECT infobip_message_id, payload, received_at FROM messages "
                                                   "WHERE infobip_message_id = ANY(%s)", (list(sent),)).fetchall())
                        and len(r) == len(sent) and r, what="every edge value stored")
    assert all(same(r["payload"], sent[r["infobip_message_id"]]) for r in rows), rows  # as sent, not a placeholder
    stamps = [r["received_at"] for r in rows]
    assert 2000 in {t.astimezone(timezone.utc).year for t in stamps}
    # a time in our future (2099) is stored as "now": it must not hold the user's 24-hour window open for decades
    assert max(stamps) <= datetime.now(timezone.utc)


# ------------------------------------------------------------------------------------------ the fuzz

HOSTILE_CHARS = st.sampled_from(["\x00", "\ud800", "\udbff", "\udc00", "\udfff", "\ufeff", "\u2028", "\uffff",
                                 "\U0010ffff", "\U0001f600", "\u0301", "\u202e", "\\", '"', "\x1f", "\x7f", "\u0661"])
# joined by hand: st.text() leaves lone surrogates out even when its alphabet offers them
TEXT = st.lists(st.one_of(st.characters(), HOSTILE_CHARS), max_size=24).map("".join)
LEAF = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False, allow_infinity=False),
                 TEXT)
JSON = st.recursive(LEAF, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(TEXT, kids, max_size=3),
                    max_leaves=8)


DEEP = st.builds(_nest, LEAF, st.integers(MAX_DEPTH - 8, MAX_DEPTH + 30), st.booleans())
BENIGN = st.one_of(st.text(max_size=30), st.none())  # any Unicode but NUL and surrogates: storable
VALUE = st.one_of(BENIGN, JSON, TEXT, DEEP)
EDITS = st.sampled_from([0, 0, 0, 1, 1, 2, 3])  # how many fields one result gets wrong (or odd)


def _spell(number: str, style: int) -> str:
    return [number, "+" + number, "00" + number, f"+{number[:2]} {number[2:6]}-{number[6:]}",
            f"({number[:3]}) {number[3:]}", f" {number}.", number + "\u0660"][style]


PHONE = st.one_of(st.builds(_spell, st.sampled_from(SENDERS), st.integers(0, 6)),
                  st.sampled_from(["", "+", "1234", "1" * 21, "\u00b2" * 8, "+1 555 abc", "0044", "++4470000"]),
                  TEXT, st.integers(0, 10**22), JSON)
TO = st.one_of(st.builds(_spell, st.just(NUMBERS[TENANT]), st.integers(0, 6)), st.just("19999999999"), PHONE)


def _stamp(when: datetime, offset_minutes: int, style: int) -> str:
    sign, minutes = ("-" if offset_minutes < 0 else "+"), abs(offset_minutes)
    base = when.strftime("%Y-%m-%dT%H:%M:%S")
    return [f"{base}.{when.microsecond // 1000:03d}{sign}{minutes // 60:02d}{minutes % 60:02d}",
            f"{base}{sign}{minutes // 60:02d}:{minutes % 60:02d}", base, base[:10]][style]


TIME = st.one_of(
    st.builds(_stamp, st.datetimes(datetime(1995, 1, 1), datetime(2105, 1, 1)), st.integers(-1439, 1439),
              st.integers(0, 3)),
    st.sampled_from(["9999-12-31T23:59:59.999-2359", "0001-01-01T00:00:00.000+2359", "2025-02-30T10:00:00.000+0000",
                     "2025-01-01T24:00:00.000+0000", "2099-12-31T23:59:59.999+0000", "2100-01-01T00:00:00.000+0000",
                     "2000-01-01T00:00:00.000+0000", "1999-12-31T23:59:59.999+0000", "2025-01-01T10:10:00.000+9900"]),
    TEXT, JSON)
MESSAGES = st.sampled_from([
    {"type": "TEXT", "text": "hi"}, {"type": "IMAGE", "url": "https://x/m/1", "caption": "cat"},
    {"type": "LOCATION", "latitude": 51.5, "longitude": -0.12, "name": "Office", "address": "1 Main St"},
    {"type": "CONTACT", "contacts": [{"name": {"formattedName": "Bob"}, "phones": [{"phone": "+1555123"}]}]},
    {"type": "INTERACTIVE_BUTTON_REPLY", "id": "yes-1", "title": "Yes"},
    {"type": "BUTTON", "text": "Ok", "payload": "p"},
    {"type": "REACTION", "emoji": "\U0001f44d", "context": {"id": "m-1"}}, {"type": "HOLOGRAM", "depth": 3},
])
MESSAGE_KEYS = ["type", "text", "caption", "url", "title", "id", "payload", "latitude", "longitude", "name",
                "address", "contacts", "context", "emoji"]
DELETE = object()
# fields read as strings: a hostile string there has the right type, so only the character check stands between
# it and the database
STRING_FIELDS = [("message", "text"), ("message", "caption"), ("message", "title"), ("message", "payload"),
                 ("contact", "name"), ("integrationType",), ("keyword",), ("message", "referral", "sourceId")]
INBOUND_EDITS = st.one_of(
    st.tuples(st.sampled_from(STRING_FIELDS), TEXT), st.tuples(st.sampled_from(STRING_FIELDS), TEXT),
    st.tuples(st.just(("from",)), PHONE), st.tuples(st.just(("to",)), TO),
    st.tuples(st.just(("messageId",)), TEXT), st.tuples(st.just(("messageId",)), JSON),
    st.tuples(st.just(("receivedAt",)), TIME),
    st.tuples(st.just(("contact",)), st.one_of(JSON, st.builds(lambda n: {"name": n}, VALUE))),
    st.tuples(st.tuples(st.just("message"), st.sampled_from(MESSAGE_KEYS)), VALUE),
    st.tuples(st.tuples(st.just("message"), TEXT), VALUE),
    st.tuples(st.just(("message",)), JSON), st.tuples(st.just(("price",)), VALUE),
    st.tuples(st.tuples(TEXT), VALUE),
    st.tuples(st.tuples(st.sampled_from(["from", "to", "messageId", "message", "receivedAt", "contact"])),
              st.just(DELETE)),
)
REPORT_EDITS = st.one_of(
    st.tuples(st.sampled_from([("status", "groupName"), ("status", "name"), ("error", "description"),
                               ("callbackData",)]), TEXT),
    st.tuples(st.just(("status",)), VALUE), st.tuples(st.just(("error",)), VALUE),
    st.tuples(st.tuples(st.just("status"), st.sampled_from(["groupName", "name", "id", "groupId"])), VALUE),
    st.tuples(st.tuples(st.just("error"), st.sampled_from(["id", "name", "groupName", "description", "permanent"])),
              VALUE),
    st.tuples(st.tuples(st.sampled_from(["sentAt", "doneAt", "seenAt"])), TIME),
    st.tuples(st.just(("messageId",)), TEXT), st.tuples(st.just(("to",)), PHONE),
    st.tuples(st.just(("price",)), VALUE), st.tuples(st.tuples(TEXT), VALUE),
)


def _edit(result: dict, path: tuple, value) -> None:
    """Set (or delete) `path` in the result; a messageId keeps this run's unique prefix before its hostile tail."""
    node = result
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    if value is DELETE:
        node.pop(path[-1], None)
    elif path == ("messageId",) and isinstance(value, str):
        base = result.get("messageId")
        node["messageId"] = (base if isinstance(base, str) else f"{RUN}-{uuid.uuid4().hex[:8]}-") + value
    else:
        node[path[-1]] = value


@st.composite
def inbound_result(draw, n: int):
    result = inbound(NUMBERS[TENANT], _spell(draw(st.sampled_from(SENDERS)), draw(st.integers(0, 5))),
                     json.loads(json.dumps(draw(MESSAGES))), message_id=f"{RUN}-{n:09d}-",
                     received_at=WHEN + timedelta(seconds=draw(st.integers(0, 10**6))))["results"][0]
    for _ in range(draw(EDITS)):
        _edit(result, *draw(INBOUND_EDITS))
    return result


@st.composite
def report_result(draw, n: int):
    prefix = draw(st.sampled_from([TENANT, TENANT, "nobody"]))  # `nobody.` names no tenant: ignored, not accepted
    if draw(st.booleans()):
        result = delivery_report(f"{prefix}.{RUN}-{n:09d}-", SENDERS[0], "DELIVERED",
                                 "DELIVERED_TO_HANDSET")["results"][0]
    else:
        result = {"messageId": f"{prefix}.{RUN}-{n:09d}-", "from": NUMBERS[TENANT], "to": SENDERS[0],
                  "sentAt": infobip_time(WHEN), "seenAt": infobip_time(WHEN)}
    for _ in range(draw(EDITS)):
        _edit(result, *draw(REPORT_EDITS))
    return result


# Unique ids per example; zero-padded so an id's length never depends on how many examples ran before: hypothesis
# replays an example's choices and expects the same draws (a body's byte length bounds a later draw).
_counter = iter(range(10**9))


def one_in(n: int):
    """True once in `n` draws (hypothesis draws small integers far more often than uniformly)."""
    return st.sampled_from([True] + [False] * (n - 1))


@st.composite
def request(draw):
    """(url, raw body): 1-3 results, envelope noise, and sometimes damage to the bytes themselves."""
    results = [draw(report_result(next(_counter)) if draw(one_in(3)) else inbound_result(next(_counter)))
               for _ in range(draw(st.integers(1, 3)))]
    body = {"results": results, "messageCount": len(results), "pendingMessageCount": 0}
    if draw(one_in(8)):  # envelope noise: odd counts, unknown keys, or `results` itself wrong
        body[draw(st.sampled_from(["messageCount", "pendingMessageCount", "results", "extra"]))] = draw(VALUE)
    if draw(one_in(30)):
        body = draw(VALUE)
    # surrogates written as raw (invalid UTF-8) bytes once in four bodies, as \ud800 escapes otherwise
    raw = json.dumps(body, ensure_ascii=not draw(one_in(4))).encode("utf-8", "surrogatepass")
    if raw and draw(one_in(20)):
        at = draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + bytes([draw(st.integers(0, 255))]) + raw[at + 1:]
    elif draw(one_in(20)):
        raw = raw[:draw(st.integers(0, len(raw)))]
    reports_only = all(isinstance(r, dict) and "message" not in r for r in results)
    status_url = draw(one_in(2 if reports_only else 10))  # inbound there is refused as a whole
    return (STATUS_URL if status_url else INBOUND_URL), raw


def same(a, b) -> bool:
    """JSON equality as PostgreSQL's jsonb gives values back: numbers by value (1e16 returns as an int)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b if isinstance(a, int) and isinstance(b, int) else float(a) == float(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


REASONS = {"NUL": "NUL", "surrogate": "surrogate", "deeper": "depth", "phone": "phone", "imestamp": "time",
           "valid JSON": "json", "UTF-8": "json", "JSON number": "json", "too large": "json",
           "not accepted on this URL": "url"}


def why(answer: dict) -> str:
    text = json.dumps(answer)
    return next((label for needle, label in REASONS.items() if needle in text), "type")


class Tally:
    """What the fuzz sent, and what the webhook answered it accepted."""

    def __init__(self) -> None:
        self.requests = self.server_errors = self.ok = self.refused = 0
        self.reasons: Counter[str] = Counter()  # refusals by cause, to see the strategies reach every check
        self.inbound: dict[str, dict] = {}   # messageId -> the message object sent
        self.reports: dict[str, dict] = {}   # messageId -> the report sent

    def expect(self, tenants, raw: bytes, answer: dict) -> None:
        """Which results of an accepted body were taken, worked out like the ingress does, and checked against
        its own count."""
        taken = 0
        for result in json.loads(raw)["results"]:
            kind = result_kind(result)
            if kind == "inbound":
                tenant = tenants.by_number(result["to"])
            else:
                tenant = tenants.get(tenant_of_message_id(result["messageId"]) or "")
            if tenant is None:
                continue
            assert tenant.tenant_id == TENANT, result
            taken += 1
            if kind == "inbound":
                normalize_number(result["from"])  # accepted implies the worker's own parse succeeds
                self.inbound[result["messageId"]] = result["message"]
            else:
                self.reports[result["messageId"]] = result
        assert answer["accepted"] == taken, (answer, raw[:500])

    def not_stored_as_sent(self, conn) -> tuple[set[str], set[str]]:
        """Accepted results with no row holding exactly what was sent (a failed placeholder does not count)."""
        rows = conn.execute("SELECT infobip_message_id AS id, payload AS sent FROM messages "
                            "WHERE infobip_message_id = ANY(%s)", (list(self.inbound),)).fetchall()
        inbound = set(self.inbound) - {r["id"] for r in rows if same(r["sent"], self.inbound[r["id"]])}
        rows = conn.execute("SELECT message_id AS id, report AS sent FROM pending_reports "
                            "WHERE message_id = ANY(%s)", (list(self.reports),)).fetchall()
        reports = set(self.reports) - {r["id"] for r in rows if same(r["sent"], self.reports[r["id"]])}
        return inbound, reports


def test_fuzzed_webhooks_never_5xx_and_what_is_accepted_is_stored(client, worker, tenants, db):
    tally = Tally()

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(request())
    def fuzz(req):
        url, raw = req
        resp = post(client, raw=raw, path=url)
        tally.requests += 1
        if resp.status_code >= 500:
            tally.server_errors += 1
        assert resp.status_code < 500, (resp.status_code, resp.get_data(as_text=True)[:300], raw[:300])
        assert resp.is_json, resp.get_data()[:300]
        if resp.status_code == 200:
            tally.ok += 1
            tally.expect(tenants, raw, resp.get_json())
        else:
            tally.refused += 1
            assert resp.status_code == 400, resp.get_json()
            assert resp.get_json()["message"], resp.get_json()
            tally.reasons[why(resp.get_json())] += 1

    fuzz()
    lost: tuple[set[str], set[str]] = (set(), set())

    def all_stored() -> bool:
        nonlocal lost
        with db(TENANT) as conn:
            lost = tally.not_stored_as_sent(conn)
        return lost == (set(), set())

    try:
        wait_for(all_stored, timeout=30 + FUZZ_EXAMPLES / 20, what="every accepted result stored as sent")
    finally:
        print(f"\nfuzz: {tally.requests} requests, {tally.server_errors} 5xx, {tally.ok} 200, {tally.refused} 400; "
              f"accepted {len(tally.inbound)} inbound + {len(tally.reports)} reports; not stored as sent: "
              f"{len(lost[0])} inbound, {len(lost[1])} reports {sorted(lost[0])[:3]} {sorted(lost[1])[:3]}; "
              f"refused for {dict(tally.reasons.most_common())}")
    assert tally.ok and tally.refused  # the strategies reach both sides of the door
