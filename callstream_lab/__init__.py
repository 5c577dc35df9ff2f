"""The lab around the product: the embedded stack (services from wheels), generated calls, the
benchmark and the reliability runs. It depends on `pipeline`; nothing in `pipeline` imports it (the
CLI finds its commands through the `callstream.commands` entry points)."""
