"""What every command module shares: the handler signature."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from pipeline.settings import Settings

Handler = Callable[[Settings, argparse.Namespace], int]
