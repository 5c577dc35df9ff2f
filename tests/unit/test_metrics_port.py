"""Several workers on one host: each serves its metrics, on the next free port."""

import socket
import urllib.request

from pipeline.worker.metrics import Metrics


def test_a_second_worker_on_one_host_serves_its_metrics_on_the_next_free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        base = s.getsockname()[1]
    taken = socket.socket()
    taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
    taken.bind(("0.0.0.0", base))   # the first worker's port
    taken.listen()
    try:
        port = Metrics().serve(base)
        assert port is not None and base < port < base + 16
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert "callstream_" in body
        assert Metrics().serve(base, tries=1) is None   # only its own port, taken: not served, said so
        assert Metrics().serve(0) is None
    finally:
        taken.close()
