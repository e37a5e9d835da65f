"""Progress bars on long work, quiet in CI logs and when nobody is watching."""

from __future__ import annotations

import os
import sys

FORCE = "ATELIER_PROGRESS"  # "1" or "0": set by the runner for the stages it starts (their output is a pipe)


def progress_enabled() -> bool:
    """True when progress bars should be drawn: ATELIER_PROGRESS if set, else a terminal outside CI."""
    forced = os.environ.get(FORCE)
    if forced in ("0", "1"):
        return forced == "1"
    if os.environ.get("CI") or os.environ.get("ATELIER_QUIET"):
        return False
    return sys.stderr.isatty()
