"""Voice notes: the media is fetched from Infobip (the sandbox) with our key, never from anywhere else, and
transcribed through the real `openai` SDK by the fake OpenAI server, which "hears" the uploaded bytes as text.
"""
from __future__ import annotations

import logging
import uuid
from types import SimpleNamespace

import pytest

from helpers import GAMMA_LLM_KEY, INFOBIP_KEY
from shared.delivery.infobip.client import InfobipClient, MediaDownloadError, MediaRefused, MediaTooLarge
from devtools.sandbox import InfobipSandbox
from shared.llm import LLMError
from shared.llm.factory import provider_for
from shared.llm.mock import MockProvider
from shared.llm.openai_compat import OpenAICompatProvider
from shared.config.llm import LLMSettings
from shared.conversation.media import transcribe_voice

MEDIA_PATH = "/whatsapp/1/senders/447000000000/media/"
GAMMA = SimpleNamespace(tenant_id="gamma")


def media_id() -> str:
    return f"media-{uuid.uuid4().hex[:12]}"


def media_requests(box: InfobipSandbox, mid: str) -> list[dict]:
    return [r for r in box.requests() if r["path"].endswith(f"/media/{mid}")]


@pytest.fixture
def infobip(sandbox) -> InfobipClient:
    return InfobipClient(sandbox.url, INFOBIP_KEY)


@pytest.fixture
def openai_llm(fake_openai) -> OpenAICompatProvider:
    return OpenAICompatProvider(name="openai", api_key=GAMMA_LLM_KEY, base_url=fake_openai.url, max_retries=0)


@pytest.fixture
def other_host():
    box = InfobipSandbox().start()  # accepts any key: it would happily record ours
    yield box
    box.stop()


def last_transcription(fake_openai) -> dict:
    return [r for r in fake_openai.requests if r["path"] == "/v1/audio/transcriptions"][-1]


# ---- download


def test_media_is_downloaded_from_infobip_with_the_key(sandbox, infobip):
    mid = media_id()
    url = sandbox.add_media(mid, b"OggS\x00voice-bytes", "audio/ogg")
    assert url.startswith(sandbox.url + MEDIA_PATH)

    assert infobip.download_media(url) == b"OggS\x00voice-bytes"
    [seen] = media_requests(sandbox, mid)
    assert seen["method"] == "GET" and seen["headers"]["Authorization"] == f"App {INFOBIP_KEY}"


def test_unknown_media_and_a_wrong_key_are_clear_errors(sandbox, infobip):
    with pytest.raises(MediaDownloadError, match="HTTP 404"):
        infobip.download_media(sandbox.url + MEDIA_PATH + "no-such-media")
    url = sandbox.add_media(media_id(), b"x", "audio/ogg")
    with pytest.raises(MediaDownloadError, match="HTTP 401"):
        InfobipClient(sandbox.url, "wrong-key").download_media(url)


def test_a_url_on_another_host_is_refused_and_gets_no_request(infobip, other_host):
    mid = media_id()
    url = other_host.add_media(mid, b"voice", "audio/ogg") + "?token=abc"
    with pytest.raises(MediaRefused) as refused:
        infobip.download_media(url)
    assert other_host.requests() == []
    assert INFOBIP_KEY not in str(refused.value) and "token=abc" not in str(refused.value)
    https_twin = url.replace("http://", "https://")  # same host and port, another scheme: another origin
    with pytest.raises(MediaRefused):
        infobip.download_media(https_twin)


def test_media_over_the_cap_is_refused(sandbox, infobip):
    url = sandbox.add_media(media_id(), b"a" * 2000, "audio/ogg")
    with pytest.raises(MediaTooLarge):
        infobip.download_media(url, max_bytes=1999)
    assert infobip.download_media(url, max_bytes=2000) == b"a" * 2000


# ---- transcription


def test_transcription_goes_through_the_sdk_with_whisper(fake_openai, openai_llm):
    assert openai_llm.supports_transcription is True
    assert openai_llm.transcribe(b"see you at nine", "voice.ogg", "audio/ogg") == "see you at nine"
    seen = last_transcription(fake_openai)
    assert seen["json"] == {"model": "whisper-1", "filename": "voice.ogg", "bytes": len(b"see you at nine")}
    assert seen["headers"]["Authorization"] == f"Bearer {GAMMA_LLM_KEY}"


def test_only_openai_offers_transcription(fake_openai):
    assert not OpenAICompatProvider(name="deepseek", api_key="k").supports_transcription
    assert not OpenAICompatProvider(name="ollama").supports_transcription
    assert not OpenAICompatProvider(name="deepseek", api_key="k", base_url=fake_openai.url).supports_transcription
    with pytest.raises(LLMError):
        OpenAICompatProvider(name="ollama").transcribe(b"hi", "voice.ogg", "audio/ogg")


def test_a_provider_with_a_fallback_transcribes_with_the_primary(fake_openai):
    mock = LLMSettings(provider="mock", model_chat="mock-chat", model_embed="local-hash", base_url=None, api_key="")
    cfg = LLMSettings(provider="openai", model_chat="gpt-4o-mini", model_embed="text-embedding-3-small",
                      base_url=fake_openai.url, api_key=GAMMA_LLM_KEY, max_retries=0, fallback=mock)
    llm = provider_for(cfg)
    assert llm.supports_transcription
    assert llm.transcribe(b"hola", "voice.ogg", "audio/ogg") == "hola"
    assert not provider_for(LLMSettings(provider="mock", model_chat="m", model_embed="local-hash", base_url=None,
                                        api_key="", fallback=cfg)).supports_transcription


# ---- the voice note of an inbound message


def test_a_voice_note_becomes_its_words(sandbox, infobip, openai_llm, fake_openai):
    url = sandbox.add_media(media_id(), b"  Book me for Tuesday at 5  \n", "audio/ogg")
    text = transcribe_voice(GAMMA, infobip, openai_llm, {"type": "VOICE", "url": url})
    assert text == "Book me for Tuesday at 5"
    assert last_transcription(fake_openai)["json"]["model"] == "whisper-1"
    assert transcribe_voice(GAMMA, infobip, openai_llm, {"type": "AUDIO", "url": url}) == "Book me for Tuesday at 5"


def test_silence_and_non_audio_give_none(sandbox, infobip, openai_llm):
    silent = sandbox.add_media(media_id(), b"   ", "audio/ogg")
    assert transcribe_voice(GAMMA, infobip, openai_llm, {"type": "VOICE", "url": silent}) is None
    assert transcribe_voice(GAMMA, infobip, openai_llm, {"type": "IMAGE", "url": silent}) is None
    assert transcribe_voice(GAMMA, infobip, openai_llm, {"type": "VOICE"}) is None


def test_no_transcription_without_a_provider_that_offers_it(sandbox, infobip):
    mid = media_id()
    url = sandbox.add_media(mid, b"hello", "audio/ogg")
    assert transcribe_voice(GAMMA, infobip, MockProvider(), {"type": "VOICE", "url": url}) is None
    assert media_requests(sandbox, mid) == []  # nothing downloaded for nothing


def test_failures_give_none_and_log_no_secrets(sandbox, infobip, openai_llm, other_host, fake_openai, caplog):
    caplog.set_level(logging.DEBUG)
    elsewhere = other_host.add_media(media_id(), b"hello", "audio/ogg") + "?sig=s3cr3t"
    missing = sandbox.url + MEDIA_PATH + "gone?sig=s3cr3t"
    big = sandbox.add_media(media_id(), b"a" * 100, "audio/ogg")
    assert transcribe_voice(GAMMA, infobip, openai_llm, {"type": "VOICE", "url": elsewhere}) is None
    assert transcribe_voice(GAMMA, infobip, openai_llm, {"type": "VOICE", "url": missing}) is None
    assert transcribe_voice(GAMMA, infobip, openai_llm, {"type": "VOICE", "url": big}, max_bytes=10) is None
    refused_llm = OpenAICompatProvider(name="openai", api_key="sk-wrong-key-0000", base_url=fake_openai.url,
                                       max_retries=0)
    ok = sandbox.add_media(media_id(), b"hello", "audio/ogg")
    assert transcribe_voice(GAMMA, infobip, refused_llm, {"type": "VOICE", "url": ok}) is None
    failures = [r for r in caplog.records if r.getMessage() == "voice note not transcribed"]
    assert [r.error_type for r in failures] == ["MediaRefused", "MediaDownloadError", "MediaTooLarge", "LLMError"]
    # our own log lines (urllib3's DEBUG lines quote URLs; they are off at the production INFO level)
    logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records if r.name.startswith("shared"))
    for secret in (INFOBIP_KEY, "sk-wrong-key-0000", "s3cr3t"):
        assert secret not in logged
