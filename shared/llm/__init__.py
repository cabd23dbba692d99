"""LLM providers behind one interface: OpenAI-compatible servers (OpenAI, DeepSeek, Ollama, vLLM, llama.cpp) and
an offline mock. Build one with shared.llm.factory.provider_for (not re-exported here: shared.config imports
shared.llm.presets, and this package must not import the config back)."""
from shared.llm.base import ChatResult, LLMError, LLMProvider, ToolCall, Usage

__all__ = ["ChatResult", "LLMError", "LLMProvider", "ToolCall", "Usage"]
