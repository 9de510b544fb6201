"""Configuration: defaults, file < environment < flags, errors that name the key, the token's sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from semookii_bridge import config
from semookii_bridge.config import ConfigError


def test_defaults_match_the_contract() -> None:
    """Without a file, the defaults of CONTRACT.md section 7 apply."""
    cfg = config.load(environ={})
    assert (cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.protocol, cfg.mqtt.prefix) == ("localhost", 1883, 5, "vpp")
    assert (cfg.rate_limit.rate, cfg.rate_limit.burst, cfg.commands.default_ttl) == (0.16, 5, 60.0)
    assert cfg.api.base_url == "https://www.solaxcloud.com:9443/proxy" and cfg.journal.path == "semookii-bridge.db"


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    """A flag beats an environment variable, which beats the file."""
    path = tmp_path / "b.toml"
    path.write_text('[mqtt]\nport = 1884\nhost = "file-host"\nprefix = "file"\n[commands]\nallow_groups = ["1"]\n')
    env = {"SEMOOKII_BRIDGE_MQTT_PORT": "1885", "SEMOOKII_BRIDGE_MQTT_HOST": "env-host",
           "SEMOOKII_BRIDGE_COMMANDS_ALLOW_GROUPS": "7, 8"}  # fmt: skip
    cfg = config.load(path, environ=env, overrides={"mqtt": {"host": "flag-host"}})
    assert (cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.prefix) == ("flag-host", 1885, "file")
    assert cfg.commands.allow_groups == ["7", "8"]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[mqtt]\nport = 70000\n", "$.mqtt.port"),
        ("[mqtt]\nprotocol = 4\n", "$.mqtt.protocol"),
        ("[mqtt]\nprefix = \"vpp/#\"\n", "$.mqtt.prefix"),
        ("[rate_limit]\nrate = -1\n", "$.rate_limit.rate"),
        ("[rate_limit]\nrate = inf\n", "$.rate_limit.rate"),
        ("[rate_limit]\ndaily_quota = 9223372036854775807\n", "$.rate_limit.daily_quota"),
        ("[rate_limit]\nburst = 9223372036854775807\n", "$.rate_limit.burst"),
        ("[api]\ntimeout = inf\n", "$.api.timeout"),
        ("[commands]\nmax_abs_power = 70000\n", "$.commands.max_abs_power"),
        ("[mqtt]\nhots = \"x\"\n", "hots"),
        ("[nonsense]\n", "nonsense"),
        ("[mqtt\nport = 1\n", "line 1"),
    ],
)  # fmt: skip
def test_invalid_files_name_the_key(tmp_path: Path, text: str, fragment: str) -> None:
    """Each invalid configuration raises ConfigError naming the key (or the line of a syntax error)."""
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment.replace("$", r"\$").replace("[", r"\[")):
        config.load(path, environ={})


def test_bad_environment_value_names_the_key() -> None:
    """A malformed environment override is reported with its key."""
    with pytest.raises(ConfigError, match=r"\$.mqtt.port"):
        config.load(environ={"SEMOOKII_BRIDGE_MQTT_PORT": "eighteen"})


@pytest.mark.parametrize(("value", "reserve"), [("1", 1), (" 25 ", 25), ("3%", "3%")])
def test_a_count_or_a_percentage_from_the_environment(value: str, reserve: int | str) -> None:
    """quota_reserve (a count or a percentage) from the environment: digits are a count, "3%" a percentage."""
    cfg = config.load(environ={"SEMOOKII_BRIDGE_RATE_LIMIT_QUOTA_RESERVE": value})
    assert cfg.rate_limit.quota_reserve == reserve


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    """A config path that does not exist is reported, not ignored."""
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path / "nope.toml", environ={})


def test_token_from_file_or_environment(tmp_path: Path) -> None:
    """api.token_file wins; otherwise SEMOOKII_TOKEN; neither is an error."""
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    with_file = config.load(environ={"SEMOOKII_BRIDGE_API_TOKEN_FILE": str(token_file)})
    assert config.load_token(with_file.api, {"SEMOOKII_TOKEN": "env"}).reveal() == "from-file"
    assert config.load_token(config.load(environ={}).api, {"SEMOOKII_TOKEN": "env"}).reveal() == "env"
    with pytest.raises(ConfigError, match="SEMOOKII_TOKEN"):
        config.load_token(config.load(environ={}).api, {})


def test_token_is_not_a_config_key(tmp_path: Path) -> None:
    """The token cannot be put in the file (it would end up in backups and `config check` output)."""
    path = tmp_path / "t.toml"
    path.write_text('[api]\ntoken = "abc"\n')
    with pytest.raises(ConfigError, match="token"):
        config.load(path, environ={})


ROOT = Path(__file__).resolve().parents[1]


def test_example_file_documents_every_key_with_its_default() -> None:
    """semookii-bridge.example.toml loads to exactly the defaults and mentions every key of every section."""
    import tomllib

    example = ROOT / "semookii-bridge.example.toml"
    assert config.load(example, environ={}) == config.BridgeConfig()
    doc = tomllib.loads(example.read_text())
    expected = {section: set(values) for section, values in config.redacted(config.BridgeConfig()).items()}
    assert {section: set(values) for section, values in doc.items()} == expected


def test_config_check_prints_effective_config_without_secrets(tmp_path: Path) -> None:
    """`config check` prints the merged configuration with the broker password and token hidden."""
    from click.testing import CliRunner

    from semookii_bridge.cli import main

    path = tmp_path / "c.toml"
    path.write_text("[mqtt]\nport = 1999\n")
    env = {"SEMOOKII_BRIDGE_MQTT_PASSWORD": "hunter2", "SEMOOKII_TOKEN": "tok-123456"}
    result = CliRunner().invoke(main, ["config", "check", "--config", str(path)], env=env)
    assert result.exit_code == 0 and '"port": 1999' in result.stdout
    assert "hunter2" not in result.stdout and "tok-123456" not in result.stdout and "SEMOOKII_TOKEN" in result.stdout


def test_config_check_names_key_and_line(tmp_path: Path) -> None:
    """An invalid file makes `config check` exit 2 naming the key and its line."""
    from click.testing import CliRunner

    from semookii_bridge.cli import main

    path = tmp_path / "c.toml"
    path.write_text('[mqtt]\nhost = "x"\nport = "eighty"\n')
    result = CliRunner().invoke(main, ["config", "check", "--config", str(path)])
    assert result.exit_code == 2 and "$.mqtt.port" in result.stderr and "line 3" in result.stderr


def test_ha_without_the_postgresql_journal_is_refused(tmp_path: Path) -> None:
    """`[ha] enabled` with the SQLite journal is refused at load (so at `config check`), naming journal.url."""
    path = tmp_path / "c.toml"
    path.write_text("[ha]\nenabled = true\n")
    with pytest.raises(ConfigError, match=r"journal\.url"):
        config.load(path, environ={})
    loaded = config.load(path, environ={"SEMOOKII_BRIDGE_JOURNAL_URL": "postgresql://bridge@db:5432/vpp"})
    assert loaded.ha.enabled and loaded.journal.url == "postgresql://bridge@db:5432/vpp"


def test_the_removed_cluster_section_says_what_replaced_it(tmp_path: Path) -> None:
    """An old file with `[cluster]` gets a message that points at the hot standby."""
    path = tmp_path / "c.toml"
    path.write_text("[cluster]\ninstances = 2\nindex = 0\n")
    with pytest.raises(ConfigError, match="high-availability"):
        config.load(path, environ={})


@pytest.mark.parametrize(("text", "environ"), [("[mqtt]\nshared_group = \"vpp\"\n", {}),
                                                ("", {"SEMOOKII_BRIDGE_MQTT_SHARED_GROUP": "vpp"})])
def test_the_removed_shared_group_says_why_and_what_to_run_instead(text: str, environ: dict[str, str],
                                                                    tmp_path: Path) -> None:
    """`mqtt.shared_group`, in the file or the environment, is refused: it broke latest-wins; the hot standby is
    how more than one bridge runs."""
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"^mqtt.shared_group was removed: .* \(docs/high-availability.md\)$"):
        config.load(path, environ=environ)


def test_a_section_named_like_a_removed_key_is_not_mistaken_for_it(tmp_path: Path) -> None:
    """An `[mqtt]` table without `shared_group`, or a non-table `mqtt`, is not the removed setting."""
    path = tmp_path / "c.toml"
    path.write_text("[mqtt]\nprefix = \"site\"\n")
    assert config.load(path, environ={}).mqtt.prefix == "site"


def test_the_database_password_is_never_shown(tmp_path: Path) -> None:
    """`config show` / `config check` print the journal URL with its password starred."""
    cfg = config.load(None, environ={"SEMOOKII_BRIDGE_JOURNAL_URL": "postgresql://bridge:s3cret@db/vpp"})
    assert config.redacted(cfg)["journal"]["url"] == "postgresql://bridge:***@db/vpp"


@pytest.mark.parametrize(
    ("file_text", "environ", "fragments"),
    [
        # a bad value from the environment names the variable, not a line of the file
        ('[mqtt]\nhost = "x"\nport = 1884\n', {"SEMOOKII_BRIDGE_MQTT_PORT": "abc"},
         ["$.mqtt.port", "(environment variable SEMOOKII_BRIDGE_MQTT_PORT)"]),
        # a bad value from the file names its line
        ('[mqtt]\nhost = "x"\nport = "abc"\n', {}, ["$.mqtt.port", "bad.toml, line 3)"]),
        # a misspelled variable is an error, with the name it probably meant
        ("", {"SEMOOKII_BRIDGE_MQTT_PROT": "1"},
         ["unknown environment variable SEMOOKII_BRIDGE_MQTT_PROT (did you mean SEMOOKII_BRIDGE_MQTT_PORT?)"]),
        # a list is a JSON array or comma-separated; brackets or quotes otherwise are refused
        ("", {"SEMOOKII_BRIDGE_COMMANDS_ALLOW_GROUPS": '["1", 2'}, ["not a valid JSON array"]),
        ("", {"SEMOOKII_BRIDGE_COMMANDS_ALLOW_GROUPS": '"1","2"'}, ["comma-separated values without brackets"]),
        ("", {"SEMOOKII_BRIDGE_COMMANDS_ALLOW_GROUPS": '[{"a": 1}]'}, ["a JSON array of strings is expected"]),
        # an enum lists its values
        ('[log]\nformat = "xml"\n', {}, ["Invalid enum value 'xml'", "expected one of: logfmt, json, kv", "line 2"]),
        ("", {"SEMOOKII_BRIDGE_MQTT_PROTOCOL": "4"}, ["expected one of: 5, 3"]),
        ('[log]\nlevel = "loud"\n', {}, ["expected debug, info, warning or error"]),
        # unknown keys and sections get a "did you mean"
        ('[mqtt]\nprot = 1\n', {}, ["unknown field `prot`", "(did you mean port?)", "line 2"]),
        ('[mqttt]\n', {}, ["unknown field `mqttt`", "(did you mean mqtt?)", "line 1"]),
        # TOML errors in TOML's terms
        ('[mqtt]\n[mqtt]\n', {}, ["Cannot declare [mqtt] twice"]),
    ],
)  # fmt: skip
def test_configuration_errors_name_the_source_and_the_fix(
    tmp_path: Path, file_text: str, environ: dict[str, str], fragments: list[str]
) -> None:
    """Each mistake is an error that names where the value came from and what would be right."""
    path = tmp_path / "bad.toml"
    path.write_text(file_text)
    with pytest.raises(ConfigError) as info:
        config.load(path, environ=environ)
    for fragment in fragments:
        assert fragment in str(info.value)
    if "environment variable" in fragments[-1]:
        assert "line" not in str(info.value)


@pytest.mark.parametrize("value", ['["1", "2"]', "1,2", " 1 , 2 ", "[1, 2]"])
def test_a_list_from_the_environment_takes_either_documented_form(value: str) -> None:
    """A JSON array and comma-separated values give the same allow-list."""
    cfg = config.load(None, environ={"SEMOOKII_BRIDGE_COMMANDS_ALLOW_GROUPS": value})
    assert cfg.commands.allow_groups == ["1", "2"]


def test_the_configuration_reference_is_what_the_code_generates() -> None:
    """docs/configuration.md equals `semookii-bridge schema config`: every key, its type, default, variable and
    meaning, from the config types and the example file's comments."""
    from semookii_bridge.config.doc import markdown

    example = (ROOT / "semookii-bridge.example.toml").read_text()
    assert (ROOT / "docs/configuration.md").read_text() == markdown(example)
    assert "|  |" not in markdown(example)  # every key has a meaning
