"""Kafka TLS/SASL settings reach every client, and wrong values stop the command with the accepted ones."""

import pytest

from pipeline.ingest.security import faust_credentials, kafka_python_kwargs
from pipeline.settings import Settings


def test_plaintext_by_default():
    s = Settings.from_env({})
    assert kafka_python_kwargs(s) == {"security_protocol": "PLAINTEXT"} and faust_credentials(s) is None


def test_sasl_ssl_is_passed_to_kafka_python_and_faust():
    s = Settings.from_env({"CALLSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                           "CALLSTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                           "CALLSTREAM_KAFKA_SASL_USERNAME": "recorder", "CALLSTREAM_KAFKA_SASL_PASSWORD": "pw"})
    kw = kafka_python_kwargs(s)
    assert kw["security_protocol"] == "SASL_SSL" and kw["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kw["sasl_plain_username"] == "recorder" and kw["ssl_context"] is not None
    creds = faust_credentials(s)
    assert creds.username == "recorder" and creds.ssl_context is not None
    assert "pw" not in "\n".join(" ".join(r) for r in s.describe())


def test_an_unknown_protocol_names_the_accepted_ones():
    with pytest.raises(ValueError, match="SASL_SSL"):
        kafka_python_kwargs(Settings.from_env({"CALLSTREAM_KAFKA_SECURITY_PROTOCOL": "TLS"}))
