"""The files a configuration names (secrets, TLS material), read once before anything starts: a missing,
unreadable, empty or malformed one is one line naming its key and the cause, never a traceback or a failure
blamed on the broker later."""

from __future__ import annotations

import ssl
from collections.abc import Callable

from . import BridgeConfig
from .sources import ConfigError, read_secret, read_text


def check_files(cfg: BridgeConfig) -> None:
    """Raise ConfigError for the first file the configuration names that the bridge could not use."""
    if cfg.mqtt.username and cfg.mqtt.password_file:
        cfg.mqtt.password_secret()
    if cfg.sparkplug.enabled and cfg.sparkplug.password_file:
        read_secret("sparkplug.password_file", cfg.sparkplug.password_file)
    if cfg.http.enabled:
        cfg.http.token()
    _check_tls(cfg.mqtt.tls_ca, cfg.mqtt.tls_cert, cfg.mqtt.tls_key)


def _check_tls(ca: str, cert: str, key: str) -> None:
    """Load the CA and the client certificate the way the MQTT client will, so a bad one is named here."""
    context = ssl.create_default_context()
    if ca:
        read_text("mqtt.tls_ca", ca)
        _load("mqtt.tls_ca", ca, lambda: context.load_verify_locations(cafile=ca))
    if cert:
        read_text("mqtt.tls_cert", cert)
        if key:
            read_text("mqtt.tls_key", key)
        _load("mqtt.tls_cert", cert, lambda: context.load_cert_chain(cert, key or None))


def _load(key: str, path: str, load: Callable[[], object]) -> None:
    """Run `load`; its failure is a ConfigError naming `key`."""
    try:
        load()
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigError(f"{key} {path} cannot be used: {exc} (a PEM file is expected)") from None
