"""Prefect flows. `dataset-to-artwork` runs each DVC stage as one task, in dvc.yaml order; `generate-artworks` makes
artworks from the champion. Orchestration only: DVC decides what is stale, the stages hold the logic."""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path, PurePosixPath

import yaml
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff

from atelier import dvc, paths
from atelier import team as team_mode
from atelier.declared import require_declared
from atelier.lock import workspace_lock

# Orchestration policy, per stage. No stage has a wall-clock limit: a big collection on a busy machine is slow, not
# broken. A stage is stopped only when it shows no sign of work for ATELIER_STAGE_STALL_S (atelier/dvc.py, 30 min).
DEFAULT_TIMEOUT_S = 10 * 60  # the summary and the generate-artworks flow, which have no stall watchdog
RETRIES = {"ingest": 2}  # sources may be remote folders or URLs: transient failures are worth another try
RETRY_BACKOFF_S = 10.0  # exponential: the first retry after 10 s, the second after 20 s
SUMMARY_KEY = "atelier-run-summary"
MLFLOW_UI = "http://127.0.0.1:5000"  # where `make ui` serves MLflow


def _paths(entries: list) -> list[str]:
    """Paths of dvc.yaml `deps`/`outs` entries (a string, or a one-key mapping `path: {options}`)."""
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries]


def _overlap(a: str, b: str) -> bool:
    a_path, b_path = PurePosixPath(a), PurePosixPath(b)
    return a_path == b_path or a_path in b_path.parents or b_path in a_path.parents


def stage_names(root: Path | None = None) -> list[str]:
    """The stage names of `root`/dvc.yaml in file order; raise if a stage depends on an output of a later stage."""
    dvc_yaml = (root or paths.ROOT) / "dvc.yaml"
    stages = (yaml.safe_load(dvc_yaml.read_text(encoding="utf-8")) or {}).get("stages") or {}
    names = list(stages)
    for i, name in enumerate(names):
        for later in names[i + 1 :]:
            outs = _paths(
                stages[later].get("outs", []) + stages[later].get("metrics", []) + stages[later].get("plots", [])
            )
            for dep in _paths(stages[name].get("deps", [])):
                if any(_overlap(dep, out) for out in outs):
                    raise ValueError(
                        f"{dvc_yaml}: stage '{name}' depends on {dep}, an output of the later stage "
                        f"'{later}'; move '{later}' above '{name}' (the flow runs stages in file order)"
                    )
    return names


def select(names: list[str], upto: str | None) -> list[str]:
    """The stages from the first up to and including `upto` (all of them when None)."""
    if upto is None:
        return names
    if upto not in names:
        raise ValueError(f"unknown stage '{upto}'; dvc.yaml has: {', '.join(names)}")
    return names[: names.index(upto) + 1]


@task(cache_policy=NO_CACHE)
def run_stage(stage: str, root: str, force: bool = False) -> str:
    """Run `dvc repro --single-item <stage>` in `root` (DVC skips it when nothing changed, unless `force`); return
    DVC's output."""
    output = dvc.repro(stage, root=Path(root), single=True, force=force)
    get_run_logger().info("dvc repro --single-item %s:\n%s", stage, output.strip())
    return output


def stage_task(stage: str):
    """`run_stage` with this stage's name, timeout and retries (exponential backoff) from the policy tables."""
    retries = RETRIES.get(stage, 0)
    return run_stage.with_options(
        name=stage,
        task_run_name=stage,
        retries=retries,
        retry_delay_seconds=exponential_backoff(RETRY_BACKOFF_S) if retries else 0,
        timeout_seconds=None,  # see atelier.dvc.repro: stopped when stalled, never for being slow
    )


def _cell(value) -> str:
    if isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value):
        text = ", ".join(_cell(v) for v in value)
    elif isinstance(value, (dict, list)):
        text = json.dumps(value, default=str)
    else:
        text = str(value)
    text = text if len(text) <= 160 else text[:157] + "..."
    return text.replace("|", "\\|").replace("\n", " ")


def _flatten(mapping: dict, prefix: str = "") -> list[tuple[str, object]]:
    rows: list[tuple[str, object]] = []
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            rows += _flatten(value, f"{prefix}{key}.")
        else:
            rows.append((f"{prefix}{key}", value))
    return rows


def summary_markdown(summary: dict, root: Path) -> str:
    """Markdown for the run summary artifact: one section per key that pipeline_summary() returned, then links."""
    lines = ["# Atelier run summary", "", f"Workspace: `{root}`", ""]
    for key, value in summary.items():
        lines += [f"## {key.replace('_', ' ').capitalize()}", ""]
        if isinstance(value, dict):
            lines += ["| | |", "|---|---|"] + [f"| {k} | {_cell(v)} |" for k, v in _flatten(value)]
        else:
            lines.append(_cell(value))
        lines.append("")
    if not summary:
        lines += ["No stage outputs yet.", ""]
    lines += ["## Links", ""]
    champion = summary.get("champion") or {}
    if champion.get("version"):
        lines.append(
            f"- Champion: {champion.get('name')} version {champion['version']}, MLflow run "
            f"`{champion.get('run_id')}`: {MLFLOW_UI}/#/models/{champion.get('name')}/versions/"
            f"{champion['version']} (with `make ui` running)"
        )
    lines.append(
        f"- Gallery: `{root / paths.relative(paths.GALLERY)}`"
        if "artworks" in summary
        else "- Gallery: none yet (the generate stage writes it)"
    )
    return "\n".join(lines) + "\n"


def _json_in_root(root: str, code: str, what: str):
    """Run Python `code` in root's own Python, as the DVC stages run (atelier.paths resolves against the package that
    is imported there), and return the JSON its last line prints; RuntimeError naming `what` when it fails."""
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} in {root} failed:\n{proc.stderr.strip()[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@task(name="summary", task_run_name="summary", cache_policy=NO_CACHE, timeout_seconds=300)
def publish_summary(root: str) -> dict:
    """Read atelier.run_summary.pipeline_summary() for `root` and publish it as the `atelier-run-summary` artifact."""
    code = (
        "import json; from atelier.run_summary import pipeline_summary; "
        "print(json.dumps(pipeline_summary(), default=str))"
    )
    summary = _json_in_root(root, code, "reading the run summary")
    create_markdown_artifact(
        key=SUMMARY_KEY,
        markdown=summary_markdown(summary, Path(root)),
        description="Counts per stage, exclusions, metrics, champion and gallery",
    )
    return summary


@task(name="rights-requests", task_run_name="rights-requests", cache_policy=NO_CACHE, timeout_seconds=300)
def advance_rights_requests(root: str) -> list[dict]:
    """The rights holders' approved requests that this run answered: a new version trained without their works
    (retrained), and the artworks citing a taken-down work withdrawn (provenance/rights_requests.py advance)."""
    code = (
        "import json; from atelier.config import load_params; from provenance import ledger, rights_requests; "
        "c = ledger.open_ledger(); "
        "print(json.dumps([{k: r[k] for k in ('ref', 'kind', 'state')} "
        "for r in rights_requests.advance(c, load_params().registry.model_name)]))"
    )
    moved = _json_in_root(root, code, "advancing the rights requests")
    for r in moved:
        get_run_logger().info("rights request %s (%s) is now %s", r["ref"], r["kind"], r["state"])
    return moved


@flow(name="dataset-to-artwork", task_runner=ThreadPoolTaskRunner(max_workers=1))
def dataset_to_artwork(root: str | None = None, upto: str | None = None) -> dict[str, str]:
    """Run dvc.yaml's stages in order, one task each, up to `upto`; publish the summary; return DVC output per stage."""
    where = Path(root).resolve() if root else paths.ROOT
    for warning in require_declared(where):  # pre-flight: stop before any stage when a source is not a DVC dep
        get_run_logger().warning(warning.message)
    outputs: dict[str, str] = {}
    team = team_mode.current()  # team mode: the services were checked by the CLI; here they are locked and used
    shared = team_mode.run_lock(team, "pipeline run", where) if team else nullcontext()
    with workspace_lock(where, "pipeline run"), shared:  # a second run at once refuses instead of interleaving
        if team:
            dvc.configure_remote(team.dvc_remote, team.s3_endpoint, where)
            pending = dvc.unpublished(where)
            if pending:  # the last run finished but its push failed: publish it before anything changes
                get_run_logger().warning("publishing the previous run first (its push failed: %s)", pending["reason"])
                dvc.push(where)
        # URL opt-outs due for a re-check (ingest.recheck_after_days, `atelier sources recheck`): DVC sees no change,
        # so the flow asks the ingest stage and forces it
        recheck = (
            subprocess.run(
                [sys.executable, "-m", "stages.ingest", "--recheck-due"], cwd=where, capture_output=True
            ).returncode
            == 0
        )
        for stage in select(stage_names(where), upto):  # strictly one at a time: one DVC command per workspace
            outputs[stage] = stage_task(stage)(stage, str(where), force=recheck and stage == "ingest")
        if "train_diffusion" in outputs:  # a new version may answer the rights holders' approved requests
            advance_rights_requests(str(where))
        if team:  # what this run produced reaches the team's remote, or the run is marked unpublished
            get_run_logger().info("dvc push to %s:\n%s", team.dvc_remote, dvc.push(where).strip())
    publish_summary(str(where))
    return outputs


@task(cache_policy=NO_CACHE, timeout_seconds=DEFAULT_TIMEOUT_S)
def generate(prompts: list[str], seed: int, count: int) -> list[dict]:
    """Generate `count` artworks per prompt from the champion (stages.generate); return their provenance manifests."""
    from stages.generate import generate_artworks

    return generate_artworks(prompts, seed=seed, n=count)


@flow(name="generate-artworks", task_runner=ThreadPoolTaskRunner(max_workers=1))
def generate_artworks_flow(prompts: list[str], seed: int, count: int = 1) -> list[dict]:
    """Generate artworks with provenance from the `champion` model and publish a table of them."""
    manifests = generate(prompts, seed, count)
    rows = ["| id | prompt | seed | model | CLIPScore | replication |", "|---|---|---|---|---|---|"]
    for m in manifests:
        gen = m.get("artwork", {}).get("generator", {})
        model, checks = m.get("model", {}), m.get("checks", {})
        rows.append(
            f"| {m.get('id')} | {_cell(gen.get('prompt'))} | {gen.get('seed')} | {model.get('name')} "
            f"v{model.get('version')} | {_cell(checks.get('clip_score'))} | "
            f"{_cell(checks.get('replication', {}).get('verdict'))} |"
        )
    create_markdown_artifact(
        key="atelier-artworks",
        markdown=f"# {len(manifests)} artworks\n\n" + "\n".join(rows),
        description=f"Artworks in {paths.ARTWORKS}",
    )
    return manifests
