"""WordLlamaEmbedder (embedding_model `wordllama-256`): the static model packaged in PyPI `wordllama`, loaded strictly
offline. pytest-socket blocks every non-loopback connection here, so a download attempt would fail these tests."""
from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from shared.config.settings import load_settings
from shared.config.tenants import EMBEDDING_DIMS, parse_tenants
from shared.errors import ConfigError
from shared.memory import wordllama_embedder as wl
from shared.memory.embedders import LOCAL_MODELS, DimensionMismatch, HashEmbedder, embedder_for
from shared.memory.wordllama_embedder import WordLlamaEmbedder


@pytest.fixture(scope="module")
def emb() -> WordLlamaEmbedder:
    return WordLlamaEmbedder()


def cos(u, v) -> float:
    return float(np.dot(u, v))


def _tenant(**over):
    settings = load_settings({"DATABASE_URL": "postgresql://x@127.0.0.1/db", "REDIS_URL": "redis://127.0.0.1:1/0",
                              "WEBHOOK_VERIFY_TOKEN": "t", "INFOBIP_BASE_URL": "http://127.0.0.1:9",
                              "INFOBIP_API_KEY": "k"}, dotenv=False)
    doc = {"tenant_id": "wl", "waba_number": "+1 555 0199", "db_dsn": "postgresql://x@127.0.0.1/db_wl",
           "embedding_model": "wordllama-256", "config": {"business_name": "W", "timezone": "Europe/Berlin"}}
    doc.update(over)
    return parse_tenants({"tenants": [doc]}, settings, {}).require("wl")


def test_related_texts_are_closer_than_unrelated_ones(emb):
    q, dentist, apples = emb.embed(["When is my dentist appointment?", "Dentist visit on Friday at 2pm",
                                    "I bought apples and pears"])
    assert cos(q, dentist) > cos(q, apples) + 0.1
    a, b, c, d = emb.embed(["What time do you open on Saturday?", "Are you open on Saturday morning?",
                            "How much does a haircut cost?", "What is the price of a haircut?"])
    assert cos(a, b) > max(cos(a, c), cos(a, d))  # paraphrases beat unrelated questions
    assert cos(c, d) > max(cos(c, a), cos(c, b))


def test_vectors_are_unit_length_256_floats_in_order(emb):
    texts = ["Opening hours are 9 to 5", "", "   ", "🙂", "x" * 5000, "Zahnarzttermin am Freitag"]
    vecs = emb.embed(texts)
    assert emb.name == "wordllama-256" and emb.dim == 256
    assert len(vecs) == len(texts)
    for v in vecs:
        assert len(v) == 256 and all(isinstance(x, float) and math.isfinite(x) for x in v)
        assert abs(sum(x * x for x in v) - 1) < 1e-9
    assert emb.embed([]) == []
    assert emb.embed([""]) == emb.embed([""])  # a text without tokens still gets one fixed unit vector


def test_a_batch_equals_one_text_at_a_time(emb):
    texts = [f"reminder {i}: " + "call the plumber about the leaking tap " * (i % 7) for i in range(150)] + [""]
    batch = np.array(emb.embed(texts))
    alone = np.array([emb.embed([t])[0] for t in texts])
    assert batch.shape == (151, 256)
    assert np.allclose(batch, alone, atol=1e-6)


def test_two_loads_give_the_same_vectors(emb, monkeypatch):
    texts = ["Dentist visit on Friday at 2pm", "Refunds within 30 days"]
    first = emb.embed(texts)
    monkeypatch.setattr(wl, "_model", None)
    assert WordLlamaEmbedder().embed(texts) == first


def test_the_model_loads_once_per_process_even_under_threads(monkeypatch):
    monkeypatch.setattr(wl, "_model", None)
    calls = []
    real = wl._load
    monkeypatch.setattr(wl, "_load", lambda: calls.append(1) or real())
    threads = [threading.Thread(target=wl.load_model) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and wl.load_model() is wl._model


def test_missing_weights_are_a_config_error_naming_the_file(monkeypatch, tmp_path):
    monkeypatch.setattr(wl, "_model", None)
    missing = tmp_path / "weights" / "l2_supercat_256.safetensors"
    monkeypatch.setattr(wl, "WEIGHTS_FILE", missing)
    with pytest.raises(ConfigError, match="wordllama-256.*l2_supercat_256.safetensors.*never downloaded"):
        WordLlamaEmbedder().embed(["hello"])


def test_the_packaged_files_are_the_ones_loaded():
    assert wl.WEIGHTS_FILE.is_file() and wl.WEIGHTS_FILE.parent.parent == wl.PACKAGE_DIR
    assert wl.TOKENIZER_FILE.is_file() and wl.TOKENIZER_FILE.parent.parent == wl.PACKAGE_DIR


def test_embedder_for_registers_wordllama_without_changing_defaults():
    assert "wordllama-256" in LOCAL_MODELS and EMBEDDING_DIMS["wordllama-256"] == 256
    tenant = _tenant()
    assert tenant.embedding_dim == 256
    assert isinstance(embedder_for(tenant, env={}), WordLlamaEmbedder)
    assert isinstance(embedder_for(_tenant(embedding={"provider": "local"}), env={}), WordLlamaEmbedder)
    assert isinstance(embedder_for(_tenant(embedding_model="local-hash"), env={}), HashEmbedder)
    with pytest.raises(DimensionMismatch, match="256.*384"):
        embedder_for(_tenant(config={"business_name": "W", "timezone": "Europe/Berlin", "embedding_dim": 384}),
                     env={})
