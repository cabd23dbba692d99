"""LLM providers behind one interface: OpenAI-compatible servers (OpenAI, DeepSeek, Ollama) and an offline mock."""
from shared.llm.base import ChatResult, LLMError, LLMProvider, ToolCall, Usage
from shared.llm.factory import provider_for

__all__ = ["ChatResult", "LLMError", "LLMProvider", "ToolCall", "Usage", "provider_for"]
