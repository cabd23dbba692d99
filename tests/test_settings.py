"""Settings are parsed once; a missing or malformed value stops start-up with a message naming it."""
import pytest

from shared.errors import ConfigError
from shared.config.settings import QUEUES, READY_QUEUES_DEFAULT, load_settings
from shared.queueing.tasks import QUEUES as TASK_QUEUES

BASE = {"REDIS_URL": "redis://127.0.0.1:6379/0", "WEBHOOK_VERIFY_TOKEN": "s3cret-token-value"}


def test_defaults_are_typed():
    s = load_settings(BASE, dotenv=False)
    assert s.app_port == 8080
    assert s.llm_provider == "mock"
    assert s.tenants_file == "tenants.yaml"
    assert s.infobip_waba_numbers == ()


@pytest.mark.parametrize("missing", ["REDIS_URL", "WEBHOOK_VERIFY_TOKEN"])
def test_missing_required_setting_is_named(missing):
    env = {k: v for k, v in BASE.items() if k != missing}
    with pytest.raises(ConfigError, match=missing):
        load_settings(env, dotenv=False)


@pytest.mark.parametrize("name,value", [
    ("APP_PORT", "eighty"), ("APP_PORT", "70000"), ("LLM_PROVIDER", "gpt"),
    ("REDIS_URL", "localhost:6379"), ("INFOBIP_BASE_URL", "ftp://x"), ("DATABASE_URL_DEFAULT", "mysql://x/y"),
])
def test_malformed_setting_is_named(name, value):
    with pytest.raises(ConfigError, match=name):
        load_settings({**BASE, name: value}, dotenv=False)


def test_real_provider_needs_a_key():
    with pytest.raises(ConfigError, match="LLM_API_KEY"):
        load_settings({**BASE, "LLM_PROVIDER": "openai"}, dotenv=False)
    s = load_settings({**BASE, "LLM_PROVIDER": "deepseek", "LLM_API_KEY": "k"}, dotenv=False)
    assert s.llm_model_chat == "deepseek-chat"


def test_secrets_stay_out_of_repr_and_errors():
    s = load_settings({**BASE, "LLM_API_KEY": "sk-very-secret", "INFOBIP_API_KEY": "ib-very-secret"}, dotenv=False)
    text = repr(s)
    assert "sk-very-secret" not in text and "ib-very-secret" not in text and "s3cret-token-value" not in text
    with pytest.raises(ConfigError) as err:
        load_settings({**BASE, "APP_PORT": "s3cret-token-value"}, dotenv=False)
    assert "s3cret-token-value" not in str(err.value)


def test_environment_wins_over_dotenv(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("APP_PORT=9000\nWEBHOOK_VERIFY_TOKEN=from-file\nREDIS_URL=redis://h:1/0\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("APP_PORT", "9100")
    for k in ("WEBHOOK_VERIFY_TOKEN", "REDIS_URL"):
        monkeypatch.delenv(k, raising=False)
    s = load_settings()
    assert s.app_port == 9100
    assert s.webhook_verify_token == "from-file"


def test_log_level_is_validated():
    with pytest.raises(ConfigError, match="LOG_LEVEL must be one of .*DEBUG") as err:
        load_settings({**BASE, "LOG_LEVEL": "verbose"}, dotenv=False)
    assert "verbose" not in str(err.value)
    assert load_settings({**BASE, "LOG_LEVEL": "debug"}, dotenv=False).log_level == "DEBUG"
    assert load_settings({**BASE, "LOG_LEVEL": ""}, dotenv=False).log_level == "INFO"


def test_waba_numbers_are_normalised_and_a_bad_entry_is_named():
    s = load_settings({**BASE, "INFOBIP_WABA_NUMBERS": " +1 555 000, 0044 7700-900123,,+1555000 "}, dotenv=False)
    assert s.infobip_waba_numbers == ("1555000", "447700900123")
    with pytest.raises(ConfigError, match=r"INFOBIP_WABA_NUMBERS: entry #2 is not a phone number"):
        load_settings({**BASE, "INFOBIP_WABA_NUMBERS": "+1 555 000, call me"}, dotenv=False)


def test_env_example_empty_values_count_as_unset():
    """A .env copied from .env.example: its empty assignments are defaults, and it pins no provider's model."""
    from dotenv import dotenv_values

    from devtools.devstack import ROOT

    example = {k: v for k, v in dotenv_values(ROOT / ".env.example").items() if v is not None}
    assert example["INFOBIP_API_KEY"] == "" and example["INFOBIP_WABA_NUMBERS"] == ""
    assert "LLM_MODEL_CHAT" not in example
    with pytest.raises(ConfigError, match="REDIS_URL is not set"):   # empty means unset, also for required ones
        load_settings(example, dotenv=False)
    s = load_settings({**example, "REDIS_URL": "redis://h:1/0"}, dotenv=False)
    assert s.infobip_api_key == "" and s.infobip_base_url is None and s.database_url_default is None
    assert s.infobip_waba_numbers == () and s.llm_base_url is None and s.llm_model_chat == "mock-chat"
    for provider, model in [("openai", "gpt-4o-mini"), ("deepseek", "deepseek-chat"), ("ollama", "llama3.1")]:
        s = load_settings({**example, "REDIS_URL": "redis://h:1/0", "LLM_PROVIDER": provider, "LLM_API_KEY": "k"},
                          dotenv=False)
        assert s.llm_model_chat == model, provider


def test_every_error_is_reported_at_once():
    """One run names every wrong variable (never a value), each in its own line."""
    with pytest.raises(ConfigError) as err:
        load_settings({"APP_PORT": "s3cret", "LLM_PROVIDER": "openai", "CELERY_RESTORE_INTERVAL": "0",
                       "INFOBIP_RETRY_BASE_SECONDS": "soon"}, dotenv=False)
    text = str(err.value)
    for name in ("REDIS_URL", "WEBHOOK_VERIFY_TOKEN", "APP_PORT", "LLM_API_KEY", "CELERY_RESTORE_INTERVAL",
                 "INFOBIP_RETRY_BASE_SECONDS"):
        assert name in text
    assert text.startswith("6 settings are wrong:") and "s3cret" not in text


def test_settings_are_grouped_by_concern():
    s = load_settings({**BASE, "APP_HOST": "127.0.0.1", "WEB_KEEPALIVE": "0", "CELERY_VISIBILITY_TIMEOUT": "400",
                       "INFOBIP_RETRY_BASE_SECONDS": "0.5", "EMBEDDING_API_KEY": "emb-secret",
                       "WABOT_MIGRATIONS_DIR": "/srv/migrations"}, dotenv=False)
    assert (s.web.host, s.web.port, s.web.keepalive, s.web.worker_class) == ("127.0.0.1", 8080, 1, "gevent")
    assert s.broker.visibility_timeout == 400 and s.broker.redis_url == BASE["REDIS_URL"]
    assert s.infobip.retry_base_seconds == 0.5 and str(s.database.migrations_dir) == "/srv/migrations"
    assert s.embeddings.api_key == "emb-secret" and "emb-secret" not in repr(s.embeddings)
    assert s.llm.provider == "mock" and s.database.pool_max == 20


def test_ready_queues_know_every_queue_and_wait_for_summaries_only_when_asked():
    assert set(QUEUES) == set(TASK_QUEUES)  # settings cannot import the queueing package: kept equal here
    assert load_settings(BASE, dotenv=False).ready_queues == READY_QUEUES_DEFAULT
    assert "summaries" not in READY_QUEUES_DEFAULT
    assert load_settings({**BASE, "READY_QUEUES": "inbound,summaries"}, dotenv=False).ready_queues == \
        ("inbound", "summaries")
    with pytest.raises(ConfigError, match="READY_QUEUES: unknown queue 'inbox'"):
        load_settings({**BASE, "READY_QUEUES": "inbox"}, dotenv=False)
