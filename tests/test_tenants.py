"""tenants.yaml: interpolation, validation errors that name tenant and field, lookups by any spelling."""
import pytest
import yaml

from shared.errors import ConfigError
from shared.config.settings import load_settings
from shared.config.tenants import load_tenants, parse_tenants

SETTINGS = load_settings({"REDIS_URL": "redis://127.0.0.1/0", "WEBHOOK_VERIFY_TOKEN": "t",
                          "INFOBIP_BASE_URL": "https://x.api.infobip.com", "INFOBIP_API_KEY": "k",
                          "DATABASE_URL_DEFAULT": "postgresql://u:pw@db.example:5432/postgres"}, dotenv=False)


def tenant(**over):
    doc = {"tenant_id": "shop", "waba_number": "+1 234-567-890", "db_dsn": "postgresql://u@h/shop",
           "embedding_model": "text-embedding-3-small", "vector_store": "pgvector",
           "enabled_agents": ["orchestrator", "db_agent"],
           "config": {"business_name": "Shop", "timezone": "America/New_York", "rag_enabled": True}}
    doc.update(over)
    return doc


def parse(*docs, env=None, settings=SETTINGS):
    return parse_tenants({"tenants": list(docs)}, settings, env or {})


def test_seed_shape_parses_and_lookup_tolerates_spelling():
    reg = parse(tenant())
    t = reg.require("shop")
    assert t.waba_number == "1234567890"
    assert t.config.timezone == "America/New_York" and t.config.rag_enabled is True
    assert t.embedding_dim == 1536
    for spelling in ("+1234567890", "1234567890", "+1 234 567 890", "1-234-567-890", "001234567890"):
        assert reg.by_number(spelling) is t, spelling
    assert reg.by_number("999999999") is None
    assert reg.by_number("not a number") is None


def test_env_interpolation_and_missing_reference_is_named():
    reg = parse(tenant(db_dsn="${SHOP_DSN}", llm={"provider": "openai", "api_key": "${SHOP_KEY}"}),
                env={"SHOP_DSN": "postgresql://u@h/shopdb", "SHOP_KEY": "sk-abc"})
    t = reg.require("shop")
    assert t.db_dsn.endswith("/shopdb") and t.llm.api_key == "sk-abc" and t.llm.provider == "openai"
    with pytest.raises(ConfigError, match=r"tenants\[0\]\.db_dsn refers to \$\{NOPE\}"):
        parse(tenant(db_dsn="${NOPE}"))
    reg = parse(tenant(db_dsn="${NOPE:-postgresql://u@h/fallback}"))
    assert reg.require("shop").db_dsn.endswith("/fallback")


@pytest.mark.parametrize("field,value,message", [
    ("waba_number", "call me", "tenant shop: waba_number"),
    ("config", {"timezone": "Mars/Olympus"}, "tenant shop: config.timezone"),
    ("vector_store", "faiss", "tenant shop: vector_store"),
    ("enabled_agents", "db_agent", "tenant shop: enabled_agents"),
    ("embedding_model", "my-own-model", "tenant shop: embedding_model"),
    ("llm", {"provider": "claude"}, "tenant shop: llm.provider"),
    ("llm", {"provider": "openai"}, "tenant shop: llm.api_key"),
    ("db_dsn", "host='unterminated", "tenant shop: db_dsn"),
])
def test_validation_errors_name_tenant_and_field(field, value, message):
    with pytest.raises(ConfigError, match=message):
        parse(tenant(**{field: value}))


def test_two_tenants_may_not_share_a_number_or_a_database():
    with pytest.raises(ConfigError, match="tenant b: waba_number is already used by tenant a"):
        parse(tenant(tenant_id="a"), tenant(tenant_id="b", waba_number="1234567890", db_dsn="postgresql://u@h/b"))
    with pytest.raises(ConfigError, match="tenant b: db_dsn points at the database of tenant a"):
        parse(tenant(tenant_id="a", db_dsn="postgresql://u@h:5432/same"),
              tenant(tenant_id="b", waba_number="+999 111 222", db_dsn="host=h port=5432 dbname=same user=x"))


def test_db_dsn_defaults_to_a_database_per_tenant_on_the_default_server():
    doc = tenant()
    del doc["db_dsn"]
    t = parse(doc).require("shop")
    assert "dbname=wabot_shop" in t.db_dsn and "db.example" in t.db_dsn
    bare = load_settings({"REDIS_URL": "redis://h/0", "WEBHOOK_VERIFY_TOKEN": "t", "INFOBIP_BASE_URL": "http://x",
                          "INFOBIP_API_KEY": "k"}, dotenv=False)
    with pytest.raises(ConfigError, match="tenant shop: db_dsn is not set and DATABASE_URL_DEFAULT"):
        parse(doc, settings=bare)


def test_per_tenant_overrides_and_secrets_not_in_repr():
    t = parse(tenant(infobip={"base_url": "https://own.api.infobip.com/", "api_key": "own-ib-key"},
                     webhook_token="own-hook-token",
                     llm={"provider": "deepseek", "api_key": "ds-key"})).require("shop")
    assert t.infobip_base_url == "https://own.api.infobip.com" and t.infobip_api_key == "own-ib-key"
    assert t.llm.model_chat == "deepseek-chat"
    assert "own-ib-key" not in repr(t) and "ds-key" not in repr(t) and "own-hook-token" not in repr(t)


def test_waba_numbers_allowlist():
    s = load_settings({"REDIS_URL": "redis://h/0", "WEBHOOK_VERIFY_TOKEN": "t", "INFOBIP_BASE_URL": "http://x",
                       "INFOBIP_API_KEY": "k", "INFOBIP_WABA_NUMBERS": "+1 555 000, +1234567890"}, dotenv=False)
    assert parse(tenant(), settings=s).require("shop")
    with pytest.raises(ConfigError, match="not listed in INFOBIP_WABA_NUMBERS"):
        parse(tenant(waba_number="+44 1111 2222"), settings=s)


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_tenants(SETTINGS, str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("tenants: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_tenants(SETTINGS, str(bad))
    empty = tmp_path / "empty.yaml"
    empty.write_text(yaml.safe_dump({"tenants": []}))
    with pytest.raises(ConfigError, match="defines no tenants"):
        load_tenants(SETTINGS, str(empty))


def test_example_file_is_valid():
    from devtools.devstack import ROOT

    env = {"ACME_DB_DSN": "postgresql://u@h/acme", "ACME_INFOBIP_KEY": "x", "WABOT_LLM_KEY_ACME_1": "k1",
           "WABOT_LLM_KEY_ACME_2": "k2",
           "DEEPSEEK_API_KEY": "ds", "WEATHER_API_KEY": "w",
           "OPENAI_API_KEY": "sk-x", "GLOBEX_DB_DSN": "postgresql://u@h/globex", "GLOBEX_WEBHOOK_TOKEN": "g"}
    reg = load_tenants(SETTINGS, str(ROOT / "tenants.yaml.example"), env=env)
    assert len(reg) >= 2
    from shared.agents.registry import validate_agents
    from shared.conversation.ratelimit import tenant_limits
    from shared.tools.registry import build_registry

    for t in reg:  # what a worker checks at start-up
        validate_agents(t)
        build_registry(t)
        tenant_limits(t)


def test_a_misspelt_field_is_not_silently_ignored():
    with pytest.raises(ConfigError, match="tenant shop: unknown field\\(s\\) enabeld_agents"):
        parse(tenant(enabeld_agents=["db_agent"]))


def test_a_misspelt_config_key_is_an_error_naming_tenant_and_key():
    with pytest.raises(ConfigError, match=r"tenant shop: unknown config key\(s\) tool_gatting"):
        parse(tenant(config={"timezone": "UTC", "tool_gatting": False}))


@pytest.mark.parametrize("key,value,message", [
    ("tool_gating", "false", "config.tool_gating must be true or false"),   # a quoted "false" would be truthy
    ("mark_read", "no", "config.mark_read must be true or false"),
    ("typing_indicator", 0, "config.typing_indicator must be true or false"),
    ("rag_enabled", "true", "config.rag_enabled must be true or false"),
    ("failure_reply", 42, "config.failure_reply must be a non-empty string"),
    ("rate_limit_notice", "   ", "config.rate_limit_notice must be a non-empty string"),
    ("rate_limit_user", 30, "config.rate_limit_user must be a non-empty string"),
    ("business_name", ["a"], "config.business_name must be a string"),
    ("debounce_ms", "1500", "config.debounce_ms must be a whole number"),
])
def test_config_values_are_type_checked(key, value, message):
    with pytest.raises(ConfigError, match=f"tenant shop: {message}"):
        parse(tenant(config={"timezone": "UTC", key: value}))


def test_every_config_key_is_a_typed_field_and_nothing_reads_config_by_string():
    import dataclasses
    import re
    from pathlib import Path

    from devtools.devstack import ROOT
    from shared.config.tenants import CONFIG_KEYS, TenantConfig

    for path in Path(ROOT).glob("[siw]*/**/*.py"):  # shared/, ingress/, workers/
        assert not re.search(r"config\.extra\b", path.read_text()), f"{path} reads config by string"
    assert CONFIG_KEYS - {"embedding_dim"} == {f.name for f in dataclasses.fields(TenantConfig)}

    cfg = {"business_name": "Shop", "timezone": "UTC", "rag_enabled": False, "max_context_tokens": 2000,
           "daily_token_budget": 1000, "max_tool_steps": 3, "debounce_ms": 0, "embedding_dim": 1536,
           "rate_limit_user": "5/minute", "rate_limit_tenant": "100/minute", "mark_read": False,
           "typing_indicator": False, "tool_gating": False, "unreadable_message_reply": " Sorry! ",
           "budget_exhausted_reply": "Later", "rate_limit_notice": "Slow down", "failure_reply": "Oops",
           "knowledge_passages": 2, "knowledge_min_similarity": 0.4, "knowledge_min_coverage": 1,
           "history_budget_tokens": 1000, "summary_max_tokens": 0, "smalltalk_history_tokens": 100,
           "smalltalk_memory_min_score": 0.6, "prefetch_reads": False}
    assert set(cfg) == CONFIG_KEYS
    t = parse(tenant(config=cfg)).require("shop")
    assert t.config.tool_gating is False and t.config.mark_read is False
    assert t.config.unreadable_message_reply == "Sorry!" and t.config.rate_limit_user == "5/minute"
    assert t.config.rag_enabled is False and t.config.max_tool_steps == 3 and t.config.prefetch_reads is False
    assert (t.config.knowledge_passages, t.config.knowledge_min_similarity, t.config.knowledge_min_coverage) \
        == (2, 0.4, 1.0)
    # `key:` with no value leaves the default in force
    t = parse(tenant(config={"timezone": "UTC", "failure_reply": None, "max_tool_steps": None})).require("shop")
    assert t.config.failure_reply is None and t.config.max_tool_steps == 6 and t.config.tool_gating is True


def test_a_bad_allowlist_entry_in_hand_built_settings_is_named():
    import dataclasses

    s = dataclasses.replace(SETTINGS, infobip_waba_numbers=("+1234567890", "call me"))
    with pytest.raises(ConfigError, match="INFOBIP_WABA_NUMBERS") as err:
        parse(tenant(), settings=s)
    assert "call me" not in str(err.value)
