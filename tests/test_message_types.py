"""Every inbound message type of the Infobip reference is accepted (200) and stored with its type and fields;
types we do not know yet too."""
import pytest

from helpers import AUTH, NUMBERS, inbound, new_user, wait_for

MESSAGES = {
    "TEXT": {"type": "TEXT", "text": "hi there"},
    "TEXT_REFERRAL": {"type": "TEXT", "text": "from an ad", "referral": {"sourceId": "ad1", "sourceType": "ad"}},
    "IMAGE": {"type": "IMAGE", "url": "https://x.api.infobip.com/whatsapp/1/senders/1/media/1", "caption": "my cat"},
    "DOCUMENT": {"type": "DOCUMENT", "url": "https://x/media/2", "caption": None},
    "VIDEO": {"type": "VIDEO", "url": "https://x/media/3"},
    "VOICE": {"type": "VOICE", "url": "https://x/media/4"},
    "AUDIO": {"type": "AUDIO", "url": "https://x/media/5"},
    "STICKER": {"type": "STICKER", "url": "https://x/media/6"},
    "LOCATION": {"type": "LOCATION", "latitude": 51.5072, "longitude": -0.1276, "name": "Office",
                 "address": "1 Main St"},
    "CONTACT": {"type": "CONTACT", "contacts": [{"name": {"formattedName": "Bob Smith", "firstName": "Bob"},
                                                 "phones": [{"phone": "+1555123", "type": "CELL", "waId": "1555123"}],
                                                 "emails": [], "org": {}}]},
    "INTERACTIVE_BUTTON_REPLY": {"type": "INTERACTIVE_BUTTON_REPLY", "id": "yes-1", "title": "Yes"},
    "INTERACTIVE_LIST_REPLY": {"type": "INTERACTIVE_LIST_REPLY", "id": "slot-2", "title": "Tuesday 10:00",
                               "description": "with Dr. Who"},
    "BUTTON": {"type": "BUTTON", "text": "Confirm", "payload": "confirm-42"},
    "REACTION": {"type": "REACTION", "emoji": "👍", "action": "ADDED", "context": {"from": "x", "id": "m-1"}},
    "ORDER": {"type": "ORDER", "catalogId": "c1", "productItems": [{"productRetailerId": "p1", "quantity": 2}]},
    "INTERACTIVE_FLOW_REPLY": {"type": "INTERACTIVE_FLOW_REPLY", "response": {"a": 1}},
    "UNSUPPORTED": {"type": "UNSUPPORTED"},
    "BRAND_NEW_TYPE": {"type": "HOLOGRAM", "depth": 3},
}


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_every_type_is_accepted_and_stored(name, client, worker, db):
    user = new_user()
    message = MESSAGES[name]
    body = inbound(NUMBERS["alpha"], user, message)
    resp = client.post("/webhooks/infobip", json=body, headers=AUTH)
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["accepted"] == 1
    mid = body["results"][0]["messageId"]
    with db("alpha") as conn:
        row = wait_for(lambda: conn.execute("SELECT * FROM messages WHERE infobip_message_id = %s AND status <> "
                                            "'received'", (mid,)).fetchone(), what=f"{name} stored and handled")
    assert row["message_type"] == message["type"]
    assert row["payload"] == message  # every field kept as Infobip sent it
    expected_status = "ignored" if message["type"] == "REACTION" else "answered"
    assert row["status"] == expected_status


def test_readable_types_become_text_for_the_turn(client, worker, db, sandbox):
    cases = {
        "INTERACTIVE_BUTTON_REPLY": "Yes", "INTERACTIVE_LIST_REPLY": "Tuesday 10:00", "BUTTON": "Confirm",
        "IMAGE": "[image] my cat", "LOCATION": "latitude 51.5072, longitude -0.1276",
        "CONTACT": "Bob Smith (+1555123)",
    }
    for name, fragment in cases.items():
        user = new_user()
        client.post("/webhooks/infobip", json=inbound(NUMBERS["alpha"], user, MESSAGES[name]), headers=AUTH)
        reply = wait_for(lambda: [r for r in sandbox.requests(path="/whatsapp/1/message/text")
                                  if r["json"]["to"] == user], what=f"reply to {name}")
        assert fragment in reply[0]["json"]["content"]["text"], name


def test_media_the_bot_cannot_read_gets_a_polite_answer(client, worker, sandbox):
    user = new_user()
    client.post("/webhooks/infobip", json=inbound(NUMBERS["alpha"], user, MESSAGES["VOICE"]), headers=AUTH)
    reply = wait_for(lambda: [r for r in sandbox.requests(path="/whatsapp/1/message/text")
                              if r["json"]["to"] == user], what="polite reply")
    assert "can't read" in reply[0]["json"]["content"]["text"]
