"""The team's services for the tests (issue 27): `atelier services up` in a scratch folder, stopped at the end, and a
fresh PostgreSQL database per test. Only what a test needs is started (PostgreSQL alone starts in about a second)."""

from __future__ import annotations

import secrets
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from app.services import Services


@contextmanager
def services(only: tuple[str, ...]):
    """Services in a scratch folder (those in `only`, with what they need), stopped, waited for and removed at the
    end. The folder is under /tmp itself: the postgres user must reach it (pytest's tmp_path is private to root)."""
    root = Path(tempfile.mkdtemp(prefix="atelier-services-"))
    team = Services(root)
    try:
        team.up(only=only)
        yield team
    finally:
        team.down()
        shutil.rmtree(root, ignore_errors=True)


def fresh_database(team: Services) -> str:
    """The URL of a new, empty database on the team's PostgreSQL (the owner is the team's user)."""
    import psycopg2

    url = team.env()["ATELIER_LEDGER_URL"]
    name = "t_" + secrets.token_hex(6)
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()
    return url.rsplit("/", 1)[0] + "/" + name
