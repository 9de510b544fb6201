"""The files a configuration names, and the configuration file itself: every way one can be unusable is one line
naming the key and the cause with exit code 2, never a traceback; secrets in database URLs never printed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from semookii_bridge.config import url_without_password

USER = '[mqtt]\nusername = "u"\n'
CASES = {
    "config-utf16": ("", "the configuration file", "is UTF-16 text: save it as UTF-8"),
    "config-binary": ("", "the configuration file", "is not UTF-8 text"),
    "missing-password": (USER + 'password_file = "{dir}/nope"\n', "mqtt.password_file", "No such file or directory"),
    "password-is-a-folder": (USER + 'password_file = "{dir}"\n', "mqtt.password_file", "Is a directory"),
    "empty-password": (USER + 'password_file = "{dir}/blank"\n', "mqtt.password_file", "is empty"),
    "ca-not-pem": ('[mqtt]\ntls_ca = "{dir}/blank"\n', "mqtt.tls_ca", "cannot be used"),
    "missing-ca": ('[mqtt]\ntls_ca = "{dir}/nope"\n', "mqtt.tls_ca", "No such file or directory"),
    "token-file-binary": ('[api]\ntoken_file = "{dir}/binary"\n', "api.token_file", "is not UTF-8 text"),
    "missing-page-token": ('[http]\nauth_token_file = "{dir}/nope"\n', "http.auth_token_file", "No such file or directory"),
    "empty-page-token": (
        '[http]\nhost = "0.0.0.0"\nauth_token_file = "{dir}/blank"\n',
        "http.auth_token_file",
        "is empty",
    ),
    "blank-page-token": ('[http]\nhost = "0.0.0.0"\nauth_token = "   "\n', "http.host 0.0.0.0", "set http.auth_token"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_an_unusable_file_is_one_line_naming_its_key_and_exit_2(case: str, tmp_path: Path) -> None:
    """`run` with the file broken this way prints one error line naming the key and the cause and exits 2."""
    text, key, cause = CASES[case]
    (tmp_path / "blank").write_text("\n")
    (tmp_path / "binary").write_bytes(b"\xca\xfe\xba\xbe\x00\x01")
    config = tmp_path / "bridge.toml"
    if case == "config-utf16":
        config.write_bytes("[mqtt]\nhost = 'x'\n".encode("utf-16"))
    elif case == "config-binary":
        config.write_bytes(b"\x80\x81[mqtt]\n")
    else:
        config.write_text(text.format(dir=tmp_path))
    env = {**os.environ, "SEMOOKII_TOKEN": "a-token-of-some-length"}
    out = subprocess.run(
        [sys.executable, "-m", "semookii_bridge.cli", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and key in out.stderr and cause in out.stderr, out.stderr


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://bridge:s3cr@t@db/vpp", "postgresql://bridge:***@db/vpp"),
        (
            "postgresql://bridge@db/vpp?password=s3cret&sslmode=require",
            "postgresql://bridge@db/vpp?password=***&sslmode=require",
        ),
        ("postgres://:s3cret@db/vpp", "postgres://:***@db/vpp"),
        ("postgresql://u:s3cret@h1,h2/db?sslpassword=s3cret", "postgresql://u:***@h1,h2/db?sslpassword=***"),
        ("postgresql://u:pa/ss@db:5432/vpp", "postgresql://u:***@db:5432/vpp"),
        ("host=db user=u password=s3cret dbname=vpp", "host=db user=u password=*** dbname=vpp"),
        ("postgresql://db/vpp", "postgresql://db/vpp"),
    ],
)
def test_a_database_url_is_shown_without_its_password(url: str, shown: str) -> None:
    """Every place a password can sit in a libpq URL or keyword string is starred; the rest stays readable."""
    assert url_without_password(url) == shown
