"""`callstream bench`: throughput, latency and scale-out through the real stack, beside the limits and a peer."""
