from datetime import UTC, datetime

import pytest

from pipeline.contract import ChunkMeta, header_map, parse, split_s3_uri
from pipeline.errors import BadChunk


def headers(**over):
    base = {"callstream-schema": b"1", "call-id": b"call-1", "seq": b"3", "start-ms": b"15000"}
    base.update({k.replace("_", "-"): v for k, v in over.items()})
    return [(k, v) for k, v in base.items() if v is not None]


def test_round_trip_through_headers():
    meta = ChunkMeta("call-1", 3, 15000, end_of_call=True, layout="dual", duration_ms=5000,
                     claim_check="s3://bucket-1/k", call_started_at=datetime(2026, 1, 1, tzinfo=UTC),
                     published_at_ms=123)
    assert parse(meta.headers(), b"call-1") == meta


@pytest.mark.parametrize("over, reason", [
    ({"callstream_schema": None}, "missing_header"),
    ({"callstream_schema": b"2"}, "unknown_schema"),
    ({"call_id": None}, "missing_header"),
    ({"call_id": b"bad id; rm -rf /"}, "malformed_header"),
    ({"seq": None}, "missing_header"),
    ({"seq": b"three"}, "malformed_header"),
    ({"start_ms": b"-5"}, "malformed_header"),
    ({"end_of_call": b"maybe"}, "malformed_header"),
    ({"layout": b"grid"}, "malformed_header"),
    ({"claim_check": b"http://x/y"}, "malformed_header"),
    ({"call_started_at": b"yesterday"}, "malformed_header"),
    ({"seq": b"\xff\xfe"}, "malformed_header"),
])
def test_every_malformation_has_a_stable_reason(over, reason):
    with pytest.raises(BadChunk) as err:
        parse(headers(**over), b"call-1")
    assert err.value.reason == reason


def test_key_must_match_call_id():
    with pytest.raises(BadChunk) as err:
        parse(headers(), b"other-call")
    assert err.value.reason == "malformed_header"


def test_headers_may_come_as_a_mapping_of_str():
    meta = parse({"Callstream-Schema": "1", "call-id": "c", "seq": "0", "start-ms": "0"}, None)
    assert (meta.call_id, meta.seq, meta.end_of_call, meta.layout) == ("c", 0, False, None)


def test_none_headers_and_s3_uri():
    assert header_map(None) == {}
    assert split_s3_uri("s3://bucket/calls/a/000001.mkv") == ("bucket", "calls/a/000001.mkv")


@pytest.mark.parametrize("over, reason", [
    ({"start_ms": b"99999999999999999999"}, "malformed_header"),   # would overflow bigint
    ({"seq": str(2**31).encode()}, "malformed_header"),            # would overflow integer
    ({"duration_ms": b"0"}, "malformed_header"),
    ({"duration_ms": str(25 * 3600 * 1000).encode()}, "malformed_header"),
    ({"seq": b" 1"}, "malformed_header"),
    ({"seq": "١".encode()}, "malformed_header"),                   # a digit, but not ASCII
    ({"layout": b"x" * 5000}, "malformed_header"),                 # bounded before it is parsed
    ({"claim_check": b"s3://callstream-chunks/../../etc/passwd"}, "claim_check_refused"),
    ({"claim_check": b"s3://callstream-chunks/calls//x"}, "claim_check_refused"),
    ({"claim_check": b"s3://callstream-chunks/a?versionId=1"}, "claim_check_refused"),
    ({"claim_check": b"s3://Bad_Bucket/x"}, "malformed_header"),
])
def test_headers_are_checked_against_sane_ranges(over, reason):
    with pytest.raises(BadChunk) as err:
        parse(headers(**over), b"call-1")
    assert err.value.reason == reason


def test_a_repeated_header_is_malformed_whatever_its_case():
    hs = headers() + [("SEQ", b"4")]
    with pytest.raises(BadChunk) as err:
        parse(hs, b"call-1")
    assert err.value.reason == "malformed_header" and "repeated" in err.value.detail


def test_too_many_headers_are_refused_before_decoding():
    hs = headers() + [(f"x-{i}", b"v") for i in range(100)]
    with pytest.raises(BadChunk) as err:
        parse(hs, b"call-1")
    assert err.value.reason == "malformed_header"


def test_details_are_bounded_and_printable():
    with pytest.raises(BadChunk) as err:
        parse(headers(layout=b"\x1b[31m" + b"y" * 1500), b"call-1")
    assert len(err.value.detail) < 200 and "\x1b" not in err.value.detail


def test_the_alert_record_round_trips_and_anything_else_is_refused():
    import json

    import pytest

    from pipeline.contract import AlertMessage

    a = AlertMessage(7, "call-1", "cust", "customer", "upset", 3000, 8000, {"angry": 0.7}, "v/3",
                     "2026-12-03T08:00:00+00:00", "2026-12-03T08:00:01+00:00")
    body = json.loads(a.encode())
    assert body["window"] == {"start_ms": 3000, "end_ms": 8000} and body["alert_id"] == 7
    assert AlertMessage.decode(a.encode()) == a
    for bad in (b"", b"[]", b'{"alert_id": 1}', b"\xff", None):
        with pytest.raises(ValueError):
            AlertMessage.decode(bad)


def test_dead_letter_headers_are_the_contracts_names():
    from pipeline.contract import dead_letter_headers, is_dead_letter_header

    hs = dict(dead_letter_headers("undecodable", "x" * 5000, "chunks/0/7", 2))
    assert hs["dlq-reason"] == b"undecodable" and hs["dlq-source"] == b"chunks/0/7" and hs["dlq-attempts"] == b"2"
    assert len(hs["dlq-detail"]) <= 1003 and all(is_dead_letter_header(k) for k in hs)
    assert is_dead_letter_header("DLQ-Reason") and not is_dead_letter_header("call-id")
