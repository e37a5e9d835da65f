"""Progress bars on long work, quiet in CI logs and when output is not a terminal."""

from __future__ import annotations

import os
import sys


def progress_enabled() -> bool:
    """True when progress bars should be drawn (a terminal, not CI, not ATELIER_QUIET)."""
    if os.environ.get("CI") or os.environ.get("ATELIER_QUIET"):
        return False
    return sys.stderr.isatty()
