"""The two kinds of failure the worker distinguishes: the chunk's fault, or the world's.

BadChunk: retrying cannot help; the chunk goes to the dead-letter topic with `reason` and the ledger
records it as failed. TransientFault: a dependency is down; retry with backoff, never advance the offset.
"""


class BadChunk(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class TransientFault(Exception):
    pass
