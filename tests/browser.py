"""Headless Chromium (Debian's package, installed by `make setup`) for tests that look at pages."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--allow-file-access-from-files",
]


def chromium() -> str:
    """Path of the chromium binary, or skip the test with the reason (only outside CI: in CI it must exist)."""
    import os

    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            raise RuntimeError("chromium is not installed; `make setup` installs Debian's chromium package")
        pytest.skip("chromium is not installed (run `make setup` as root)")
    return found


def _run(args: list[str]) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [chromium(), *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120
        )


def dump_dom(page: Path) -> str:
    """The DOM after the page loaded (scripts, if any were allowed, would have run)."""
    proc = _run(["--virtual-time-budget=3000", "--dump-dom", page.resolve().as_uri()])
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def screenshot(page: Path, name: str, width: int = 1400, height: int = 1800) -> Path:
    """Save a PNG screenshot of the page under test-artifacts/; return its path."""
    ARTIFACTS.mkdir(exist_ok=True)
    out = ARTIFACTS / name
    proc = _run(
        [f"--screenshot={out}", f"--window-size={width},{height}", "--hide-scrollbars", page.resolve().as_uri()]
    )
    assert proc.returncode == 0 and out.exists(), proc.stderr[-2000:]
    return out


def chromedriver() -> str:
    """Path of Debian's chromedriver (package chromium-driver), with chromium and selenium present; else skip the
    test with the reason (only outside CI: in CI they must exist)."""
    import importlib.util
    import os

    chromium()
    found = shutil.which("chromedriver")
    missing = (
        "chromedriver is not installed (Debian's chromium-driver; `make setup` as root)"
        if found is None
        else "selenium is not installed (pip install -e '.[dev]')"
        if importlib.util.find_spec("selenium") is None
        else None
    )
    if missing:
        if os.environ.get("CI"):
            raise RuntimeError(missing)
        pytest.skip(missing)
    return found


@contextmanager
def webdriver_session(width: int = 1100, height: int = 1000) -> Iterator:
    """A selenium WebDriver on headless Chromium through Debian's chromedriver (never a downloaded driver), with a
    throwaway profile; quit on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium()
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    with tempfile.TemporaryDirectory() as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver()))
        try:
            driver.set_page_load_timeout(60)
            driver.implicitly_wait(30)  # a click's page may still be loading on a busy machine: find_element waits
            yield driver
        finally:
            driver.quit()
