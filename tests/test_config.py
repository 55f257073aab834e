"""The config file: validation errors that name the key and line, presets merged, hot reload."""

from __future__ import annotations

import time
from typing import Any

import pytest

from assistantd import config, providers
from tests.conftest import Daemon
from tests.upstream import Upstream


def test_unknown_key_names_key_and_line() -> None:
    """An unknown key is an error naming the key and its line."""
    text = 'default_model = "x"\n\n[providers.fake]\nbase_url = "http://h/v1"\nbase_ur1 = "typo"\n'
    with pytest.raises(config.ConfigError) as e:
        config.parse(text, "c.toml")
    assert "c.toml:line 5: providers.fake.base_ur1" in str(e.value)


@pytest.mark.parametrize(
    "url", ["", "localhost:1234/v1", "ftp://h/v1", "http:///v1", "http://h:99999999/v1"]
)
def test_a_base_url_that_is_no_http_url_names_key_and_line(url: str) -> None:
    """A provider's base_url without a scheme (`localhost:1234/v1`), of another scheme,
    without a host or with a bad port is refused at load, naming the key and its line (it
    loaded, and every request failed as "cannot reach")."""
    text = f'default_model = "x"\n[providers.lm]\nbase_url = "{url}"\n'
    with pytest.raises(config.ConfigError) as e:
        config.parse(text, "c.toml")
    assert "c.toml:line 3: providers.lm.base_url" in str(e.value)
    assert "http://localhost:1234/v1" in str(e.value)
    good = config.parse('[providers.lm]\nbase_url = "http://127.0.0.1:1234/v1"\n')
    assert good.providers["lm"].base_url == "http://127.0.0.1:1234/v1"


def test_wrong_type_names_key_and_line() -> None:
    """A wrong type is an error naming the key and its line."""
    text = '[models."tiny-ctx"]\ncontext_window = "big"\n'
    with pytest.raises(config.ConfigError) as e:
        config.parse(text, "c.toml")
    assert "c.toml:line 2: models.tiny-ctx.context_window" in str(e.value)


def test_toml_syntax_error_has_line() -> None:
    """A TOML syntax error says where."""
    with pytest.raises(config.ConfigError) as e:
        config.parse("a = \n", "c.toml")
    assert "line 1" in str(e.value)


def test_preset_override_keeps_other_fields() -> None:
    """Overriding one field of a preset keeps the preset's other fields."""
    cfg = config.parse('[providers.openai]\nbase_url = "http://127.0.0.1:9/v1"\n')
    p = providers.build(cfg)["openai"]
    assert p.base_url == "http://127.0.0.1:9/v1" and p.key_env == "OPENAI_API_KEY"
    assert "gpt-*" in p.models


def test_routing_order() -> None:
    """Routing: the provider param, then the model patterns, then default_provider."""
    cfg = config.parse(
        'default_provider = "xai"\n[providers.mine]\nbase_url = "http://h/v1"\nmodels = ["my-*"]\n'
    )
    ps = providers.Providers(cfg)
    assert ps.route("my-model").name == "mine"
    assert ps.route("gemini-2.5-pro").name == "gemini"
    assert ps.route("gpt-4.1").name == "openai"
    assert ps.route("unknown-model").name == "xai"
    assert ps.route("gpt-4.1", "mine").name == "mine"


def test_broken_config_at_start(make_daemon: Any) -> None:
    """A daemon started with a broken config serves on defaults and reports the error."""
    d = make_daemon("[providers.x]\nneeds_key = maybe\n")
    s = d.call("daemon/status")
    assert s["config_ok"] is False and "line 2" in s["config_error"]


def _wait(d: Daemon, pred: Any, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        s: dict[str, Any] = d.call("daemon/status")
        if pred(s):
            return s
        assert time.monotonic() < deadline, s
        time.sleep(0.05)


def test_hot_reload_keeps_last_good(daemon: Daemon, upstream: Upstream) -> None:
    """A config change applies by itself; a broken one keeps the last good config and says why."""
    good = daemon.config_path.read_text()
    daemon.config_path.write_text(good.replace('"fake-echo"', '"fake-second"'))
    _wait(daemon, lambda s: s["default_model"] == "fake-second")
    daemon.config_path.write_text(good + "\n[bogus\n")
    s = _wait(daemon, lambda s: not s["config_ok"])
    assert s["default_model"] == "fake-second" and "config.toml" in s["config_error"]
    assert daemon.call("chat/send", {"message": "still works"})["text"] == "You said: still works"
    daemon.config_path.write_text(good)
    _wait(daemon, lambda s: s["config_ok"] and s["default_model"] == "fake-echo")


def test_reload_method(daemon: Daemon) -> None:
    """daemon/reload re-reads the file at once and answers with the new status."""
    daemon.config_path.write_text(fake_provider_config_with_default("fake-r", daemon))
    assert daemon.call("daemon/reload")["default_model"] == "fake-r"


def fake_provider_config_with_default(model: str, d: Daemon) -> str:
    return d.config_path.read_text().replace('"fake-echo"', f'"{model}"')
