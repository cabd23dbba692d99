"""What each kind of OpenAI-compatible server needs, in one table instead of special cases in the tool loop.

Every preset is sent `tool_choice: "auto"` whenever tools are offered (llama.cpp's server drops tools without it;
vLLM needs `--enable-auto-tool-choice` on its side), a per-call output cap, and `content: ""` rather than null
(llama.cpp answers HTTP 500 to null). The rest differs per server:
- `tool_schema`: "full" sends our JSON Schemas as they are; "simple" drops length, range and pattern limits that
  grammar-constrained servers turn into grammar rules (llama.cpp's converter overflows on large maxLength and
  crashes). Our own validation keeps the full schema either way.
- `unescape_html`: some chat templates (llama.cpp's chatml) HTML-escape text, so `&#39;` would reach WhatsApp.
- `max_tokens_param`: OpenAI's newer models take only `max_completion_tokens`; the others take `max_tokens`.
- `tool_results_as_user`: llama-cpp-python's `chatml-function-calling` template renders system, user and
  assistant messages only, so a `tool` message's result never reaches the model: send it as a user message
  that names the tool instead.
- `single_system_message`: the prompt has the system message first, then (issue 17, for the prefix cache) the
  user's summary and, right before the new message, this turn's context as system messages of their own. Chat
  templates of local servers (Gemma's, Mistral's) accept one system message, first, and raise on any other:
  these servers get the summary folded into the first system message and the turn's context into the next user
  message (what the model reads is the same, and the cacheable prefix ends at the same place).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    base_url: str | None            # None: the SDK's default (https://api.openai.com/v1 or OPENAI_BASE_URL)
    chat_model: str                 # "" when the operator must name the model (vLLM serves what it was started with)
    has_embeddings: bool = True
    transcription: bool = False     # only OpenAI has /audio/transcriptions; others answer 404
    tool_schema: str = "full"       # full | simple
    unescape_html: bool = False
    max_tokens_param: str = "max_tokens"
    tool_results_as_user: bool = False
    single_system_message: bool = False


PRESETS: dict[str, Preset] = {
    "openai": Preset(None, "gpt-4o-mini", transcription=True, max_tokens_param="max_completion_tokens"),
    "deepseek": Preset("https://api.deepseek.com", "deepseek-chat", has_embeddings=False),
    "ollama": Preset("http://localhost:11434/v1", "llama3.1", tool_schema="simple", unescape_html=True,
                     single_system_message=True),
    "vllm": Preset("http://localhost:8000/v1", "", tool_schema="simple", unescape_html=True,
                   single_system_message=True),
    "llamacpp": Preset("http://localhost:8080/v1", "local-model", tool_schema="simple", unescape_html=True,
                       tool_results_as_user=True, single_system_message=True),
}
TOOL_SCHEMA_MODES = ("full", "simple")


def preset_for(name: str) -> Preset | None:
    return PRESETS.get(name)
