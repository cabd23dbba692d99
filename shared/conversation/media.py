"""Voice notes as text: an inbound VOICE/AUDIO message is downloaded from Infobip and transcribed by the tenant's
LLM provider, when that provider has a transcription API.

Transcription is a bonus, never a reason to fail a turn: every failure (URL refused, too large, Infobip or
provider error) is logged and gives None, and the turn answers with the polite "can't read this" text instead.
Logs carry the error class and our own messages, which name hosts and paths but never keys or query strings.
"""
from __future__ import annotations

import logging
from typing import Any

from shared.delivery.infobip.client import MEDIA_MAX_BYTES, MediaDownloadError
from shared.llm.base import LLMError

log = logging.getLogger(__name__)

AUDIO_TYPES = ("VOICE", "AUDIO")

# (leading bytes, offset, file extension, content type). The transcription server picks the decoder from the
# file name's extension, and Infobip's media URLs have none, so the format is read from the bytes themselves.
_SIGNATURES = (
    (b"OggS", 0, "ogg", "audio/ogg"),
    (b"ID3", 0, "mp3", "audio/mpeg"),
    (b"\xff\xfb", 0, "mp3", "audio/mpeg"),
    (b"\xff\xf3", 0, "mp3", "audio/mpeg"),
    (b"\xff\xf2", 0, "mp3", "audio/mpeg"),
    (b"ftyp", 4, "m4a", "audio/mp4"),
    (b"RIFF", 0, "wav", "audio/wav"),
    (b"fLaC", 0, "flac", "audio/flac"),
    (b"\x1a\x45\xdf\xa3", 0, "webm", "audio/webm"),
)


def audio_format(audio: bytes) -> tuple[str, str]:
    """(extension, content type) of the audio; WhatsApp voice notes are Ogg/Opus, so that is the default."""
    for magic, offset, ext, ctype in _SIGNATURES:
        if audio[offset:offset + len(magic)] == magic:
            return ext, ctype
    return "ogg", "audio/ogg"


def transcribe_voice(tenant: Any, infobip: Any, llm: Any, message: dict, *,
                     max_bytes: int = MEDIA_MAX_BYTES) -> str | None:
    """The words of a voice note or audio message, or None (not audio, no transcription, or any failure).

    `infobip` is the tenant's InfobipClient (it only sends its key to the tenant's own Infobip base URL);
    `llm` is the tenant's provider; it is used only when it says `supports_transcription`.
    """
    if str(message.get("type") or "").upper() not in AUDIO_TYPES or not message.get("url"):
        return None
    if not getattr(llm, "supports_transcription", False):
        return None
    extra = {"tenant_id": getattr(tenant, "tenant_id", None), "llm_provider": getattr(llm, "name", None)}
    try:
        audio = infobip.download_media(str(message["url"]), max_bytes=max_bytes)
        ext, content_type = audio_format(audio)
        text = llm.transcribe(audio, f"voice.{ext}", content_type)
    except Exception as exc:  # noqa: BLE001 - a voice note we cannot read is answered, not retried
        # Only our own errors are worded to be safe to log; anything else may quote a URL or a key.
        said = str(exc)[:300] if isinstance(exc, (MediaDownloadError, LLMError)) else None
        log.warning("voice note not transcribed", extra={**extra, "error_type": exc.__class__.__name__,
                                                        "error": said})
        return None
    text = (text or "").strip()
    log.info("voice note transcribed", extra={**extra, "audio_bytes": len(audio), "chars": len(text)})
    return text or None
