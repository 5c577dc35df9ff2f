"""Kafka TLS and SASL settings, passed the same way to every client: the Faust worker, the kafka-python
producer and admin, and the aiokafka readers (DLQ tools). One place, so no client is left in plaintext."""

from __future__ import annotations

import ssl
from typing import Any

from pipeline.settings import Settings

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def _check(settings: Settings) -> str:
    protocol = settings.kafka_security_protocol.upper()
    if protocol not in PROTOCOLS:
        raise ValueError(f"CALLSTREAM_KAFKA_SECURITY_PROTOCOL={protocol!r}; accepted: {', '.join(PROTOCOLS)}")
    if protocol.startswith("SASL") and settings.kafka_sasl_mechanism.upper() not in MECHANISMS:
        raise ValueError(f"CALLSTREAM_KAFKA_SASL_MECHANISM={settings.kafka_sasl_mechanism!r}; "
                         f"accepted: {', '.join(MECHANISMS)}")
    return protocol


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if "SSL" not in _check(settings):
        return None
    return ssl.create_default_context(cafile=settings.kafka_ssl_cafile or None)


def kafka_python_kwargs(settings: Settings) -> dict[str, Any]:
    protocol = _check(settings)
    kw: dict[str, Any] = {"security_protocol": protocol}
    if "SSL" in protocol:
        kw["ssl_context"] = ssl_context(settings)
    if protocol.startswith("SASL"):
        kw.update(sasl_mechanism=settings.kafka_sasl_mechanism.upper(),
                  sasl_plain_username=settings.kafka_sasl_username,
                  sasl_plain_password=settings.kafka_sasl_password.get_secret_value())
    return kw


def aiokafka_kwargs(settings: Settings) -> dict[str, Any]:
    return kafka_python_kwargs(settings)  # aiokafka takes the same names


def faust_credentials(settings: Settings) -> Any:
    import faust

    protocol = _check(settings)
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(ssl_context(settings))
    return faust.SASLCredentials(username=settings.kafka_sasl_username,
                                 password=settings.kafka_sasl_password.get_secret_value(),
                                 ssl_context=ssl_context(settings), mechanism=settings.kafka_sasl_mechanism.upper())


def require_credentials(settings: Settings, timeout_s: float = 10.0) -> None:
    """Authenticate once against the first bootstrap broker that answers, so wrong credentials fail at
    once: the clients retry a failed SASL handshake as a broker that is not up yet, and say only
    "unable to bootstrap" after their timeout. Raises aiokafka's SaslAuthenticationFailed; anything
    else (a broker down) is left to the clients' own retries."""
    if not _check(settings).startswith("SASL"):
        return
    import asyncio

    from aiokafka.conn import create_conn
    from aiokafka.errors import SaslAuthenticationFailed

    async def attempt() -> None:
        for server in settings.bootstrap_servers.split(","):
            host, _, port = server.strip().rpartition(":")
            try:
                conn = await asyncio.wait_for(create_conn(
                    host.strip("[]"), int(port), client_id="callstream-auth-check", ssl_context=ssl_context(settings),
                    security_protocol=_check(settings), sasl_mechanism=settings.kafka_sasl_mechanism.upper(),
                    sasl_plain_username=settings.kafka_sasl_username,
                    sasl_plain_password=settings.kafka_sasl_password.get_secret_value()), timeout_s)
            except SaslAuthenticationFailed:
                raise
            except Exception:
                continue   # not answering: the next one, else the clients' own retries say so
            conn.close()
            return

    asyncio.run(attempt())
