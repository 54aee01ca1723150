"""``Settings``: defaults < ``BROKER_*`` environment < CLI flags; bad values fail clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker import cli
from broker.config import Settings, SettingsError, describe


def test_defaults() -> None:
    s = Settings()
    assert (s.host, s.port) == ("127.0.0.1", 8080)
    assert s.redis_url is None
    assert s.base_url == "http://127.0.0.1:8080"
    assert s.cors_origins == ()
    assert s.webhook_private_targets is False  # webhooks reach public addresses only


def test_switches_turn_on_with_the_flag_alone() -> None:
    args = cli.build_parser().parse_args(["serve", "--webhook-private-targets", "--demo"])
    assert (args.webhook_private_targets, args.demo, args.trust_proxy) == ("true", "true", None)
    assert Settings.load({"webhook_private_targets": "true"}, {}).webhook_private_targets is True


def test_environment_variables_are_read(tmp_path: Path) -> None:
    s = Settings.load(
        environ={
            "BROKER_PORT": "9000",
            "BROKER_DATA_DIR": str(tmp_path),
            "BROKER_REDIS_URL": "redis://localhost:6379/0",
            "BROKER_DEMO": "yes",
            "BROKER_TRUST_PROXY": "0",
            "BROKER_CORS_ORIGINS": "https://a.example.org, http://b.example.org,",
            "BROKER_PUBLIC_URL": "https://call.example.org/",
            "BROKER_LOG_LEVEL": "debug",
            "PORT": "1",  # not ours: ignored
            "broker_port": "2",  # the prefix is upper case
        }
    )
    assert s.port == 9000
    assert s.data_dir == tmp_path
    assert s.redis_url == "redis://localhost:6379/0"
    assert s.demo is True
    assert s.trust_proxy is False
    assert s.cors_origins == ("https://a.example.org", "http://b.example.org")
    assert s.base_url == "https://call.example.org"


def test_empty_optional_variable_means_unset() -> None:
    assert Settings.load(environ={"BROKER_REDIS_URL": ""}).redis_url is None


def test_overrides_beat_environment() -> None:
    env = {"BROKER_PORT": "9000", "BROKER_HOST": "0.0.0.0"}
    s = Settings.load({"port": "9100", "host": None}, env)
    assert s.port == 9100  # the flag wins
    assert s.host == "0.0.0.0"  # an absent flag (None) leaves the environment's value


def test_cli_flags_beat_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BROKER_PORT", "9000")
    monkeypatch.setenv("BROKER_LOG_FORMAT", "json")
    monkeypatch.setenv("BROKER_DATA_DIR", str(tmp_path / "from-env"))
    args = cli.build_parser().parse_args(
        ["serve", "--port", "9200", "--data-dir", str(tmp_path), "--demo"]
    )
    s = cli._settings(args)
    assert s.port == 9200
    assert s.data_dir == tmp_path
    assert s.demo is True
    assert s.log_format == "json"  # no flag given: the environment's value stays


def test_cli_reports_bad_setting_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BROKER_PORT", "eighty")
    assert cli.main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "bad setting" in err and "port" in err and "eighty" in err


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BROKER_PORT": "eighty"}, "port: 'eighty' is not a valid int"),
        ({"BROKER_PORT": "70000"}, "port must be 0..65535, got 70000"),
        ({"BROKER_DEMO": "maybe"}, "demo: 'maybe' is not a valid bool"),
        ({"BROKER_REDIS_URL": "localhost:6379"}, "redis_url must start with redis://"),
        ({"BROKER_LOG_FORMAT": "xml"}, "log_format must be text or json"),
        ({"BROKER_LOG_LEVEL": "loud"}, "log_level must be a level name"),
        ({"BROKER_ACCESS_TOKEN_TTL": "5"}, "access_token_ttl must be at least 30 seconds"),
        ({"BROKER_DEVICE_POLL_INTERVAL": "0"}, "device_poll_interval must be at least 1"),
        ({"BROKER_KEY_ROTATION_DAYS": "0"}, "key_rotation_days must be at least 1"),
        ({"BROKER_MAX_BODY_BYTES": "10"}, "max_body_bytes must be at least 1024"),
        ({"BROKER_CORS_ORIGINS": "example.org"}, "cors origin 'example.org' must be *"),
        ({"BROKER_SIGNING_KEY": "/no/such/key.pem"}, "signing_key: no such file"),
    ],
)
def test_bad_values_give_a_clear_settings_error(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.load(environ=env)
    assert message in str(caught.value)


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings(port=-1, log_format="xml")
    assert "port must be" in str(caught.value) and "log_format" in str(caught.value)


def test_unknown_override_is_refused() -> None:
    with pytest.raises(SettingsError, match="unknown setting 'colour'"):
        Settings.load({"colour": "blue"})


def test_settings_error_is_a_value_error() -> None:
    assert issubclass(SettingsError, ValueError)


def test_tls_cert_and_key_come_as_a_pair(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("cert")
    key.write_text("key")
    with pytest.raises(SettingsError, match="tls_cert and tls_key must be given together"):
        Settings(tls_cert=cert)
    with pytest.raises(SettingsError, match="tls_cert and tls_key must be given together"):
        Settings(tls_key=key)
    with pytest.raises(SettingsError, match="tls_key: no such file"):
        Settings(tls_cert=cert, tls_key=tmp_path / "missing.pem")
    s = Settings.load(environ={"BROKER_TLS_CERT": str(cert), "BROKER_TLS_KEY": str(key)})
    assert s.tls_cert == cert and s.tls_key == key
    assert s.base_url.startswith("https://")


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(AttributeError):
        s.port = 1  # type: ignore[misc]
    assert s.replace(port=1).port == 1
    with pytest.raises(SettingsError):
        s.replace(port=-1)


def test_describe_covers_every_setting() -> None:
    rows = describe()
    flags = {flag for flag, *_ in rows}
    assert "--data-dir" in flags and "--redis-url" in flags
    by_flag = {flag: (env, default) for flag, env, default, _ in rows}
    assert by_flag["--port"] == ("BROKER_PORT", "8080")
    assert by_flag["--redis-url"] == ("BROKER_REDIS_URL", "")
    assert all(text for *_, text in rows)
