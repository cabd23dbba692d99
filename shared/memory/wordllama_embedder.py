"""`WordLlamaEmbedder`: offline semantic embeddings (embedding_model `wordllama-256`) without torch or a model hub.

PyPI `wordllama` ships its 256-d static model inside the wheel: `weights/l2_supercat_256.safetensors` (16 MB, token
embeddings distilled from Llama 2 class models) and `tokenizers/l2_supercat_tokenizer_config.json`. A text's vector
is the mean of its tokens' vectors, L2-normalised here. It is loaded strictly from the installed package folder
(`cache_dir` = that folder, `disable_download=True`; tests run with sockets blocked), after checking both files: a
missing file is a ConfigError naming it, never a download. The model loads lazily, once per process, under a lock.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import wordllama
from wordllama import WordLlama

from shared.errors import ConfigError

MODEL_NAME = "wordllama-256"
CONFIG = "l2_supercat"
DIM = 256
PACKAGE_DIR = Path(wordllama.__file__).resolve().parent
WEIGHTS_FILE = PACKAGE_DIR / "weights" / f"{CONFIG}_{DIM}.safetensors"
TOKENIZER_FILE = PACKAGE_DIR / "tokenizers" / f"{CONFIG}_tokenizer_config.json"
BATCH = 64  # texts per padded numpy batch inside one `embed` call (bounds memory for long texts)

_lock = threading.Lock()
_model: Any = None  # wordllama's WordLlamaInference, loaded once per process


def load_model() -> Any:
    """The packaged model, loaded on first use (thread-safe); a ConfigError naming a missing file."""
    global _model
    if _model is None:
        with _lock:
            if _model is None:
                _model = _load()
    return _model


def _load() -> Any:
    missing = [str(p) for p in (WEIGHTS_FILE, TOKENIZER_FILE) if not p.is_file()]
    if missing:
        raise ConfigError(f"embedding_model {MODEL_NAME!r}: the wordllama package has no {' or '.join(missing)} "
                          f"(reinstall wordllama from PyPI; it is never downloaded at run time)")
    try:
        return WordLlama.load(config=CONFIG, dim=DIM, cache_dir=PACKAGE_DIR, disable_download=True)
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(f"embedding_model {MODEL_NAME!r}: cannot load the packaged wordllama model "
                          f"({exc.__class__.__name__}: {exc})") from None


class WordLlamaEmbedder:
    """Mean-pooled static token embeddings, L2-normalised; a text without tokens gets one fixed unit vector."""

    def __init__(self) -> None:
        self.name = MODEL_NAME
        self.dim = DIM

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        texts = [_check_text(t) for t in texts]
        if not texts:
            return []
        raw = np.asarray(load_model().embed(texts, norm=False, batch_size=BATCH), dtype=np.float64)
        norms = np.linalg.norm(raw, axis=1, keepdims=True)
        empty = ~(norms[:, 0] > 0) | ~np.isfinite(norms[:, 0])
        raw[empty] = 0.0
        raw[empty, 0] = 1.0  # never a zero vector: its cosine is undefined
        norms[empty] = 1.0
        return (raw / norms).tolist()


def _check_text(text: Any) -> str:
    if not isinstance(text, str):
        raise TypeError(f"embedders take strings, not {type(text).__name__}")
    return text
