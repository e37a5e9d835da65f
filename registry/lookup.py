"""One registered version read without importing MLflow, for commands that only look (`atelier audit`, takedown's
dry run): importing MLflow and opening its store costs about 2.5 s, reading one row a few milliseconds.

The embedded store (`sqlite:///…`) is read read-only with the model-registry schema MLflow has kept since 2.x; a
tracking server (`http(s)://…`, team mode) through its public REST API. Any other store, or a schema this module does
not know, goes through MLflow itself (registry/tracking.py): the answer is the same, only slower.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import urllib.error
import urllib.parse
import urllib.request

from registry.store import tracking_uri

TIMEOUT_S = 30


class _Unknown(Exception):
    """This store cannot be read here: ask MLflow."""


def get_version(model_name: str, version: str) -> dict:
    """One registered version as registry/tracking.py's get_version gives it (name, version, run_id, alias, aliases,
    tags, source); LookupError naming the model, version and store when it does not exist."""
    uri = tracking_uri()
    try:
        if uri.startswith("sqlite:///"):
            found = _from_sqlite(uri.removeprefix("sqlite:///"), model_name, str(version))
        elif uri.startswith(("http://", "https://")):
            found = _from_server(uri, model_name, str(version))
        else:
            raise _Unknown
    except _Unknown:
        from registry import tracking

        return tracking.get_version(model_name, version)
    if found is None:
        raise LookupError(f"model '{model_name}' has no version {version} in {_shown(uri)}")
    return found


def _shown(uri: str) -> str:
    """The store's address without a password."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    return uri.replace(f":{parts.password}@", ":***@", 1)


def _from_sqlite(path: str, model_name: str, version: str) -> dict | None:
    if not os.path.exists(path):
        return None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=TIMEOUT_S)
    except sqlite3.Error:
        raise _Unknown from None
    try:
        where = "workspace = 'default' AND name = ? AND version = ?"
        row = conn.execute(
            f"SELECT name, version, run_id, source FROM model_versions WHERE {where} "
            "AND current_stage IS NOT 'Deleted_Internal'",
            (model_name, int(version)),
        ).fetchone()
        if row is None:
            return None
        key = (model_name, int(version))
        tags = dict(conn.execute(f"SELECT key, value FROM model_version_tags WHERE {where}", key))
        aliases = [
            a
            for (a,) in conn.execute(
                f"SELECT alias FROM registered_model_aliases WHERE {where} ORDER BY alias", (model_name, int(version))
            )
        ]
    except (sqlite3.Error, ValueError):
        raise _Unknown from None  # another schema (or a version that is not a number): MLflow knows
    finally:
        conn.close()
    return _described(row[0], row[1], row[2], row[3], tags, aliases)


def _from_server(uri: str, model_name: str, version: str) -> dict | None:
    query = urllib.parse.urlencode({"name": model_name, "version": version})
    req = urllib.request.Request(f"{uri.rstrip('/')}/api/2.0/mlflow/model-versions/get?{query}")
    if token := os.environ.get("MLFLOW_TRACKING_TOKEN"):
        req.add_header("Authorization", f"Bearer {token}")
    elif (user := os.environ.get("MLFLOW_TRACKING_USERNAME")) is not None:
        basic = base64.b64encode(f"{user}:{os.environ.get('MLFLOW_TRACKING_PASSWORD', '')}".encode()).decode()
        req.add_header("Authorization", f"Basic {basic}")
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
            mv = json.loads(resp.read())["model_version"]
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise _Unknown from None  # let MLflow's client say what the server wants
    except (urllib.error.URLError, OSError, ValueError, KeyError):
        raise _Unknown from None
    tags = {t["key"]: t.get("value", "") for t in mv.get("tags", [])}
    aliases = sorted(mv.get("aliases", []))
    return _described(mv["name"], mv["version"], mv.get("run_id"), mv.get("source"), tags, aliases)


def _described(name, version, run_id, source, tags: dict, aliases: list) -> dict:
    return {
        "name": name,
        "version": str(version),
        "run_id": run_id,
        "alias": None,
        "aliases": list(aliases),
        "tags": tags,
        "source": source,
    }
