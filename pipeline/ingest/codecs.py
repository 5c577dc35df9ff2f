"""Every compression codec Kafka defines, readable by every client the project consumes with.

A producer picks its codec (librdkafka's `compression.type=snappy`, a topic's `compression.type=zstd`
that makes the broker recompress), and a consumer that lacks the library fails on the whole batch: a
fetcher that crashes on it takes the group down, and a restarted worker meets the same batch. So the
codec libraries are core dependencies (aiokafka reads snappy, lz4 and zstd through `cramjam`;
kafka-python, used by `dlq`, `alerts tail` and `status`, through `python-snappy`, `lz4` and
`zstandard`), and a worker checks at start that each codec round-trips in both clients.
"""

from __future__ import annotations

from collections.abc import Callable

CODECS = ("gzip", "snappy", "lz4", "zstd")
SAMPLE = b"callstream codec check " * 64


def _aiokafka() -> dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]]:
    from aiokafka import codec as c

    return {"gzip": (c.gzip_encode, c.gzip_decode), "snappy": (c.snappy_encode, c.snappy_decode),
            "lz4": (c.lz4_encode, c.lz4_decode), "zstd": (c.zstd_encode, c.zstd_decode)}


def _kafka_python() -> dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]]:
    from kafka import codec as c

    return {"gzip": (c.gzip_encode, c.gzip_decode), "snappy": (c.snappy_encode, c.snappy_decode),
            "lz4": (c.lz4_encode, c.lz4_decode), "zstd": (c.zstd_encode, c.zstd_decode)}


def unreadable() -> list[str]:
    """'client: codec (why)' for each codec a client cannot round-trip here; empty when all can."""
    out = []
    for client, table in (("aiokafka", _aiokafka), ("kafka-python", _kafka_python)):
        try:
            codecs = table()
        except Exception as exc:   # the client itself is broken: every codec is
            out += [f"{client}: {name} ({type(exc).__name__}: {exc})" for name in CODECS]
            continue
        for name in CODECS:
            encode, decode = codecs[name]
            try:
                if decode(encode(SAMPLE)) != SAMPLE:
                    out.append(f"{client}: {name} (does not round-trip)")
            except Exception as exc:
                out.append(f"{client}: {name} ({type(exc).__name__}: {str(exc)[:120]})")
    return out


class CodecsMissing(RuntimeError):
    pass


def require_all() -> None:
    """Raise CodecsMissing naming what is missing: a worker must not start unable to read a batch."""
    missing = unreadable()
    if missing:
        raise CodecsMissing("cannot read Kafka batches compressed with " + "; ".join(missing) +
                           ": install callstream's core dependencies (cramjam, python-snappy, lz4, zstandard)")
