"""Config: files, environment overrides, and one-line errors that name key, value, source and what is allowed."""

import pytest

from loopwright.runtime.config import DEFAULT_MODELS, ConfigError, load_config


def test_defaults_without_files():
    cfg = load_config(None, env={})
    assert cfg.provider == "anthropic" and cfg.budget.max_usd == 10.0


def test_file_then_local_then_env(tmp_path):
    (tmp_path / "loopwright.toml").write_text('model = "gpt-5"\nprovider = "openai"\n[budget]\nmax_usd = 3\n')
    (tmp_path / ".loopwright").mkdir()
    (tmp_path / ".loopwright" / "config.toml").write_text("[budget]\nmax_turns = 7\n")
    cfg = load_config(tmp_path, env={"LOOPWRIGHT_BUDGET__MAX_USD": "1.5",
                                     "LOOPWRIGHT_WORKSPACE__COPY_FILES": '[".env"]'})
    assert (cfg.model, cfg.provider, cfg.budget.max_usd, cfg.budget.max_turns) == ("gpt-5", "openai", 1.5, 7)
    assert cfg.workspace.copy_files == [".env"]


def test_invalid_env_value_names_key_value_and_source(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path, env={"LOOPWRIGHT_BUDGET__MAX_USD": "lots"})
    msg = str(e.value)
    assert "budget.max_usd" in msg and "'lots'" in msg and "LOOPWRIGHT_BUDGET__MAX_USD" in msg
    assert "\n" not in msg


def test_invalid_choice_lists_what_is_allowed(tmp_path):
    (tmp_path / "loopwright.toml").write_text('provider = "gemini"\n')
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path, env={})
    assert "provider" in str(e.value) and "'gemini'" in str(e.value) and "anthropic" in str(e.value)
    assert "loopwright.toml" in str(e.value)


def test_a_value_of_the_wrong_shape_is_told_the_shape_not_the_pattern(tmp_path):
    (tmp_path / "loopwright.toml").write_text('[http]\nlisten = "127.0.0.1:http"\n')
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path, env={})
    assert "it must be HOST:PORT" in str(e.value) and "pattern" not in str(e.value)


def test_unknown_key_lists_allowed_keys(tmp_path):
    (tmp_path / "loopwright.toml").write_text("[budget]\nmax_dollars = 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path, env={})
    assert "budget.max_dollars" in str(e.value) and "max_usd" in str(e.value)


def test_bad_toml_is_one_line(tmp_path):
    (tmp_path / "loopwright.toml").write_text("model = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path, env={})


def test_unknown_model_needs_prices(tmp_path):
    cfg = load_config(tmp_path, env={"LOOPWRIGHT_MODEL": "claude-imaginary-9"})
    with pytest.raises(ConfigError, match=r"unknown model 'claude-imaginary-9'.*\[models"):
        cfg.model_info()
    local = load_config(tmp_path, env={"LOOPWRIGHT_MODEL": "qwen", "LOOPWRIGHT_PROVIDER": "openai",
                                       "LOOPWRIGHT_BASE_URL": "http://localhost:11434/v1"})
    assert local.model_info().input_usd_per_mtok == 0
    proxy = load_config(tmp_path, env={"LOOPWRIGHT_MODEL": "qwen", "LOOPWRIGHT_PROVIDER": "openai",
                                       "LOOPWRIGHT_BASE_URL": "https://gateway.example.invalid/v1"})
    with pytest.raises(ConfigError, match="unknown model 'qwen'"):
        proxy.model_info()  # a remote gateway bills: never count it as free


def test_missing_key_names_variable_and_local_server(tmp_path, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    cfg = load_config(tmp_path, env={})
    with pytest.raises(ConfigError) as e:
        cfg.api_key()
    assert "ANTHROPIC_API_KEY" in str(e.value) and "--base-url" in str(e.value)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-not-a-real-key")
    assert cfg.api_key() == "test-not-a-real-key"


def test_scripted_needs_a_script(tmp_path):
    with pytest.raises(ConfigError, match="--script"):
        load_config(tmp_path, env={"LOOPWRIGHT_PROVIDER": "scripted"})


def test_budget_day_follows_the_reset_time():
    import datetime as dt

    from loopwright.runtime.fleet.budget import budget_day

    at = dt.datetime(2026, 11, 25, 5, 30).timestamp()
    assert budget_day("00:00", at) == "2026-11-25"
    assert budget_day("06:00", at) == "2026-11-24"  # before today's reset: still yesterday's budget
    with pytest.raises(ConfigError, match="fleet.resets_at"):
        load_config(None, env={"LOOPWRIGHT_FLEET__RESETS_AT": "25:00"})


def _uncommented_template() -> dict:
    """The template `loopwright init` writes, with every `# key = value` and `# [section]` line uncommented (what
    follows a value is a TOML comment)."""
    import re
    import tomllib

    from loopwright.runtime.config import CONFIG_TEMPLATE

    lines = [line[2:] for line in CONFIG_TEMPLATE.splitlines() if re.match(r'# (\[[\w."-]+\]|\w+ = )', line)]
    return tomllib.loads("\n".join(lines))


def _missing(model, data: dict, prefix: str = "") -> list[str]:
    """Keys of `model` (a pydantic model), and of its sections and tables of sections, that `data` lacks."""
    import typing

    from pydantic import BaseModel

    missing = []
    for name, field in model.model_fields.items():
        key, ann = prefix + name, field.annotation
        value_type = typing.get_args(ann)[-1] if typing.get_origin(ann) is dict else None
        if isinstance(ann, type) and issubclass(ann, BaseModel):  # a section: [name]
            missing += [f"[{key}]"] if name not in data else _missing(ann, data[name], key + ".")
        elif isinstance(value_type, type) and issubclass(value_type, BaseModel):  # a table of sections: [name."x"]
            entries = data.get(name) or {}
            missing += [f'[{key}."..."]'] if not entries else [
                m for entry, d in entries.items() for m in _missing(value_type, d, f'{key}."{entry}".')]
        elif name not in data:
            missing.append(key)
    return missing


def test_the_config_template_names_every_key_and_its_examples_are_valid():
    """A new config key fails this test until the template `loopwright init` writes shows it (commented out, with
    an example value and what it does); uncommented, the template is a valid config."""
    from loopwright.runtime.config import Config

    data = _uncommented_template()
    assert _missing(Config, data) == []
    Config.model_validate(data)  # every example value is one the config takes


def test_cache_section_and_the_price_table_cache_columns(tmp_path):
    (tmp_path / "loopwright.toml").write_text('[cache]\nttl = "1h"\nresponses_store = true\n')
    cfg = load_config(tmp_path, env={})
    assert (cfg.cache.enabled, cfg.cache.ttl, cfg.cache.responses_store) == (True, "1h", True)
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path, env={"LOOPWRIGHT_CACHE__TTL": "2h"})
    assert "cache.ttl" in str(e.value) and "'5m' or '1h'" in str(e.value) and "\n" not in str(e.value)
    for name, info in DEFAULT_MODELS.items():  # every listed model: reads, 5-minute and 1-hour writes
        read, inp = info.cache_read_usd_per_mtok, info.input_usd_per_mtok
        assert read is not None and read < inp, name
        assert (info.cache_write_usd_per_mtok, info.cache_write_1h_usd_per_mtok) == (inp * 1.25, inp * 2), name
    assert DEFAULT_MODELS["claude-sonnet-4-6"].cache_read_usd_per_mtok == pytest.approx(0.3)
