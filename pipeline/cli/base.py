"""What every command module shares: the handler signature."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from pipeline.settings import Settings

Handler = Callable[[Settings, argparse.Namespace], int]

# How long a command waits for a service to answer before it says so (a worker waits longer).
CONNECT_TIMEOUT_S = 5.0
