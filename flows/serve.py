"""Deployments served from this process against a Prefect server: the scheduled pipeline and on-demand generation."""

from __future__ import annotations

import urllib.error
import urllib.request

from prefect import serve
from prefect.settings import PREFECT_API_URL

from flows.pipeline import dataset_to_artwork, generate_artworks_flow, select, stage_names

PIPELINE_DEPLOYMENT = "scheduled"
GENERATE_DEPLOYMENT = "on-demand"


class ServerUnavailable(RuntimeError):
    """PREFECT_API_URL is unset or does not answer; the message says how to start a server."""


def check_api(timeout: float = 5.0) -> str:
    """PREFECT_API_URL when it answers /health; raise ServerUnavailable otherwise."""
    hint = "start one with `make ui` (or `atelier ui`), then `export PREFECT_API_URL=http://127.0.0.1:4200/api`"
    url = PREFECT_API_URL.value()
    if not url:
        raise ServerUnavailable(f"PREFECT_API_URL is not set: schedules need a running Prefect server; {hint}")
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout) as response:
            if response.status == 200:
                return url
    except (urllib.error.URLError, OSError) as exc:
        raise ServerUnavailable(f"no Prefect server answers at {url} ({exc}); {hint}") from exc
    raise ServerUnavailable(f"the Prefect server at {url} is not healthy; {hint}")


def serve_deployments(cron: str, upto: str | None = None, name: str = PIPELINE_DEPLOYMENT) -> None:
    """Serve `dataset-to-artwork/<name>` on `cron` and `generate-artworks/on-demand`, one flow run at a time."""
    select(stage_names(), upto)  # a wrong stage name fails now, not at 03:00
    check_api()
    pipeline = dataset_to_artwork.to_deployment(
        name=name,
        cron=cron,
        parameters={"upto": upto} if upto else None,
        description="The DVC stages of dvc.yaml in order, one task each (DVC skips what is up to date).",
    )
    generate = generate_artworks_flow.to_deployment(
        name=GENERATE_DEPLOYMENT, description="Artworks with provenance from the champion; give prompts and a seed."
    )
    serve(pipeline, generate, limit=1)  # limit=1: a generation never overlaps a pipeline run in this workspace


def deploy_to_pool(pool: str, cron: str | None = None, upto: str | None = None, name: str = "nightly") -> str:
    """Deploy `dataset-to-artwork/<name>` to the work pool `pool` (team mode), from this checkout's folder: a worker
    (`atelier worker`) on any machine with the project at the same path picks its runs up. Returns the deployment's
    full name. Two runs at once are refused by the team's run lock (atelier/team.py), never interleaved."""
    from atelier import paths

    select(stage_names(), upto)
    check_api()
    flow = dataset_to_artwork.from_source(source=str(paths.ROOT), entrypoint="flows/pipeline.py:dataset_to_artwork")
    flow.deploy(
        name=name,
        work_pool_name=pool,
        cron=cron,
        parameters={"root": str(paths.ROOT), **({"upto": upto} if upto else {})},
        description="The DVC stages of dvc.yaml in order, one task each, in team mode.",
        build=False,
        push=False,
    )
    return f"dataset-to-artwork/{name}"
