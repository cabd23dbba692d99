"""`wabot check` and the typed tenant config: every mistake of a tenants file in one run, each with its tenant,
field and YAML line; a YAML syntax error with its line."""
from __future__ import annotations

import pytest

from devtools import cli
from helpers import OFFLINE_ENV
from shared.config.yaml_lines import line_of, load_with_lines

FIVE_MISTAKES = """\
tenants:
  - tenant_id: a
    waba_number: "+1 555 0101"
    config:
      timezone: Mars/Olympus
  - tenant_id: b
    waba_number: "call me"
  - tenant_id: c
    waba_number: "+1 555 0103"
    vector_store: faiss
  - tenant_id: d
    waba_number: "+1 555 0104"
    templates:
      reengage: {name: followup, language: "english please"}
  - tenant_id: e
    waba_number: "+1 555 0105"
    config:
      tool_gatting: false
"""


@pytest.fixture
def check_env(tmp_path, monkeypatch):
    for key, value in OFFLINE_ENV.items():
        monkeypatch.setenv(key, value)

    def write(text: str) -> str:
        path = tmp_path / "tenants.yaml"
        path.write_text(text)
        monkeypatch.setenv("TENANTS_FILE", str(path))
        return str(path)
    return write


def test_check_reports_every_mistake_with_tenant_field_and_line(check_env, capsys):
    path = check_env(FIVE_MISTAKES)
    assert cli.main(["check"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[:5] == [
        f"{path}:5: tenant a: config.timezone 'Mars/Olympus' is not a known IANA time zone",
        f"{path}:7: tenant b: waba_number is not a phone number",
        f"{path}:10: tenant c: vector_store must be one of pgvector, sql_fallback",
        f"{path}:13: tenant d: templates.reengage.language must be a language code such as en or en_GB",
        f"{path}:18: tenant e: unknown config key(s) tool_gatting: config.tool_gatting is not one of "
        + err[4].split("is not one of ")[1],
    ]
    assert err[5] == f"configuration error: 5 mistake(s) in {path}"


def test_several_mistakes_of_one_tenant_are_all_reported(check_env, capsys):
    path = check_env("tenants:\n  - tenant_id: a\n    waba_number: '+1 555 0101'\n    config:\n"
                     "      debounce_ms: '1500'\n      mark_read: yes please\n    enabeld_agents: [db_agent]\n")
    assert cli.main(["check"]) == 2
    err = capsys.readouterr().err
    assert f"{path}:7: tenant a: unknown field(s) enabeld_agents" in err
    assert f"{path}:5: tenant a: config.debounce_ms must be a whole number between 0 and 60000" in err
    assert f"{path}:6: tenant a: config.mark_read must be true or false (unquoted)" in err


def test_a_yaml_syntax_error_names_its_line(check_env, capsys):
    path = check_env("tenants:\n  - tenant_id: a\n    waba_number: [unclosed\n    config: {}\n")
    assert cli.main(["check"]) == 2
    err = capsys.readouterr().err
    assert f"TENANTS_FILE: {path} is not valid YAML" in err and "at line 4" in err


def test_a_good_file_passes(check_env, capsys):
    check_env("tenants:\n  - tenant_id: a\n    waba_number: '+1 555 0101'\n    vector_store: sql_fallback\n")
    assert cli.main(["check"]) == 0
    assert "ok: 1 tenant(s)" in capsys.readouterr().out


def test_lines_of_fields_and_of_the_nearest_enclosing_field():
    _doc, lines = load_with_lines(FIVE_MISTAKES)
    assert line_of(lines, ("tenants", 0, "config", "timezone")) == 5
    assert line_of(lines, ("tenants", 1)) == 6
    assert line_of(lines, ("tenants", 1, "db_dsn")) == 6   # not in the file: its tenant's entry
