"""The `atelier` command line: run the pipeline, and (as they land) promote, generate, audit."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from atelier.config import ConfigError


def _prefect_env() -> None:
    """Prefect defaults, set before prefect is imported: state in .prefect/, no analytics, patient server start."""
    import os

    from app.ui import PREFECT_HOME

    os.environ.setdefault("PREFECT_HOME", str(PREFECT_HOME))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")  # the client-side usage data, too
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def cmd_run(args: argparse.Namespace) -> int:
    """Run the pipeline flow once (each DVC stage a Prefect task, in dvc.yaml order) and print the summary."""
    _prefect_env()
    from atelier.declared import SourcesUndeclared, require_declared

    try:  # before any stage: a source that dvc.yaml does not list would be skipped by DVC on later runs
        for warning in require_declared():
            print(f"atelier: warning: {warning.message}", file=sys.stderr)
    except SourcesUndeclared as exc:
        print(f"atelier: {exc}", file=sys.stderr)
        return 2
    from atelier import dvc
    from atelier import team as team_mode
    from atelier.run_summary import format_summary, pipeline_summary
    from flows.pipeline import dataset_to_artwork, select, stage_names

    try:
        select(stage_names(), args.upto)  # before a Prefect server starts: a wrong name or stage order fails fast
        team = team_mode.current()
        if team:
            team_mode.require(team)  # every service answers, or nothing runs
    except (ValueError, team_mode.TeamError) as exc:
        print(f"atelier: {exc}", file=sys.stderr)
        return 2
    try:
        dataset_to_artwork(upto=args.upto)
    except team_mode.TeamBusy as exc:
        print(f"atelier: {exc}", file=sys.stderr)
        return 2
    except dvc.PushFailed as exc:
        print(f"atelier: {exc}", file=sys.stderr)
        return 1
    print(format_summary(pipeline_summary()))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the scheduled pipeline deployment (and on-demand generation) against the server at PREFECT_API_URL."""
    _prefect_env()
    from flows.serve import ServerUnavailable, serve_deployments

    try:
        serve_deployments(args.cron, upto=args.upto, name=args.name)
    except (ServerUnavailable, ValueError) as exc:
        print(f"atelier: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_services(args: argparse.Namespace) -> int:
    """`atelier services up | status | down`: the team's services on this machine (app/services.py)."""
    from app.services import SERVICES, ServiceError, Services

    team = Services(Path(args.dir).expanduser())
    try:
        if args.action == "up":
            status = team.up(only=tuple(args.only or SERVICES))
        elif args.action == "down":
            stopped = team.down()
            print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
            return 0
        else:
            status = team.status()
    except ServiceError as exc:
        print(f"atelier: services {args.action}: {exc}", file=sys.stderr)
        return 1
    for name, line in status.items():
        print(f"{name:9s} {line}")
    if args.action == "up":
        print(f"\nteam mode for this shell: export ATELIER_TEAM_ENV={team.env_path}")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Run a Prefect worker of the team's work pool in this checkout until Ctrl-C: scheduled and triggered runs of
    the deployment (`atelier deploy`) run on whichever worker picks them up."""
    _prefect_env()
    from atelier import team as team_mode

    team = team_mode.current()
    if team is None:
        print(
            "atelier: worker: team mode is off (ATELIER_MODE=team and the services' addresses; docs/team.md)",
            file=sys.stderr,
        )
        return 2
    team_mode.require(team)
    import subprocess

    cmd = [sys.executable, "-m", "prefect", "worker", "start", "--pool", args.pool, "--type", "process"]
    return subprocess.call(cmd)


def cmd_deploy(args: argparse.Namespace) -> int:
    """Deploy the pipeline flow to the team's work pool (optionally on a cron schedule); print its name."""
    _prefect_env()
    from atelier import team as team_mode
    from flows.serve import deploy_to_pool

    team = team_mode.current()
    if team is None:
        print("atelier: deploy: team mode is off (ATELIER_MODE=team; docs/team.md)", file=sys.stderr)
        return 2
    team_mode.require(team)
    print(deploy_to_pool(args.pool, args.cron, upto=args.upto, name=args.name))
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    """`atelier data push | pull`: this checkout's DVC outputs to or from the team's remote."""
    from atelier import dvc
    from atelier import team as team_mode

    team = team_mode.current()
    if team is None:
        print("atelier: data: team mode is off, so there is no team remote (docs/team.md)", file=sys.stderr)
        return 2
    team_mode.require(team)
    dvc.configure_remote(team.dvc_remote, team.s3_endpoint)
    try:
        out = dvc.push() if args.action == "push" else dvc.pull()
    except (RuntimeError, dvc.PushFailed) as exc:
        print(f"atelier: data {args.action}: {exc}", file=sys.stderr)
        return 1
    print(out.strip() or "up to date")
    return 0


def cmd_ledger_migrate(args: argparse.Namespace) -> int:
    """Copy an embedded ledger file into the team's (empty) ledger and verify the chain on both sides."""
    from provenance import ledger

    if not ledger.is_team():
        print(
            "atelier: ledger migrate: set ATELIER_LEDGER_URL (team mode) to the ledger to migrate into", file=sys.stderr
        )
        return 2
    source_path = Path(args.source)
    if not source_path.is_file():
        print(f"atelier: ledger migrate: {source_path}: no ledger file there", file=sys.stderr)
        return 2
    source, target = ledger.open_read_only(source_path), ledger.open_ledger()
    try:
        done = ledger.migrate(source, target)
    except ValueError as exc:
        print(f"atelier: ledger migrate: {exc}", file=sys.stderr)
        return 1
    finally:
        source.close()
        target.close()
    counts = ", ".join(f"{v} {k}" for k, v in done.items() if k not in ("entries", "head"))
    print(f"migrated {done['entries']} log entries ({counts}); the chain verifies on both sides, head {done['head']}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    """Start the Prefect and MLflow servers, print their URLs, keep them running until Ctrl-C."""
    from app.ui import run_ui

    return run_ui(args.prefect_port, args.mlflow_port)


def cmd_summary(args: argparse.Namespace) -> int:
    """Print the summary of the last run."""
    from atelier.run_summary import format_summary, pipeline_summary

    print(format_summary(pipeline_summary()))
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    """Judge the challenger with the gate, or (with --version and --reason) move `champion` to a version as a person
    decides, recording who, when and why (registry tags and the ledger); a version marked by a takedown is refused."""
    import getpass

    from stages import promote

    if args.version is None:
        if args.reason or args.by:
            print(
                "atelier: --reason and --by go with --version N (a person's promotion); without --version the gate "
                "decides and records its own reason",
                file=sys.stderr,
            )
            return 2
        promote.main()
        return 0
    if not (args.reason or "").strip():
        print(
            f"atelier: promoting version {args.version} by hand needs a reason: atelier promote --version "
            f'{args.version} --reason "why" [--by NAME]; it is recorded in the registry and the ledger',
            file=sys.stderr,
        )
        return 2
    by = (args.by or "").strip() or getpass.getuser()
    try:
        recorded, record = promote.promote_by_hand(args.version, by, args.reason.strip())
    except promote.PromotionRefused as exc:
        print(f"atelier: {exc}", file=sys.stderr)
        return 1
    print(
        f"champion is now {record['name']} version {record['version']} (run {record['run_id']}); promoted by "
        f"{recorded['by']} at {recorded['at']}: {recorded['reason']} (previous champion: "
        f"{recorded['previous_champion'] or 'none'})"
    )
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    """Generate artworks for one prompt from the champion, each with its provenance manifest: through the checkout's
    running studio (`atelier studio`) when there is one, else alone in this process."""
    from atelier import paths
    from atelier.config import MAX_CANDIDATES

    if args.candidates is not None and not 1 <= args.candidates <= MAX_CANDIDATES:
        print(f"atelier: --candidates must be 1 to {MAX_CANDIDATES} (got {args.candidates})", file=sys.stderr)
        return 2
    out_dir = Path(args.out).resolve() if args.out else paths.ARTWORKS
    manifests = None if args.no_studio else _generate_in_studio(args, out_dir)
    if manifests is None:
        from stages.generate import generate_artworks

        manifests = generate_artworks(
            [args.prompt],
            seed=args.seed,
            n=args.n,
            steps=args.steps,
            guidance=args.guidance,
            negative_prompt=args.negative_prompt,
            out_dir=out_dir,
            candidates=args.candidates,
        )
    published = [m for m in manifests if not m.get("quarantined")]
    for m in published:
        print(
            f"{out_dir / m['artwork']['file']}  model v{m['model']['version']}  "
            f"CLIPScore {m['checks']['clip_score']:.3f}  {m['checks']['replication']['verdict']}"
        )
    for m in manifests:  # possible replications: held back, unsigned, never in the gallery
        if m.get("quarantined"):
            print(
                f"QUARANTINED {out_dir / m['file']}  seed {m['artwork']['generator']['seed']}  model "
                f"v{m['model']['version']}  {m['reason']} (nearest training images in "
                f"{(out_dir / m['file']).with_suffix('.quarantine.json').name})"
            )
    return 0 if published or not manifests else 4  # 4: every artwork was quarantined


def cmd_rights(args: argparse.Namespace) -> int:
    """`rights serve`: the rights holders' desk; `rights queue ...`: the operator's decisions; `rights lookup`."""
    import getpass
    import json

    from app import rights_desk
    from atelier.config import load_params
    from provenance import ledger
    from provenance import rights_requests as requests

    if args.rights_command == "serve":
        return rights_desk.main(args.host, args.port, args.public)
    conn = ledger.open_ledger()
    try:
        if args.rights_command == "lookup":
            if (args.image is None) == (args.name is None):
                print("atelier: rights lookup needs a picture or --name (one of them)", file=sys.stderr)
                return 2
            if args.bundle:
                try:
                    data = Path(args.image).read_bytes() if args.image else None
                    found = rights_desk.lookup_bundle(Path(args.bundle), data, args.name)
                except (OSError, ValueError, KeyError) as exc:
                    print(f"atelier: rights lookup --bundle {args.bundle}: {exc}", file=sys.stderr)
                    return 2
                if args.json:
                    print(json.dumps(found, indent=2))
                elif not found["works"]:
                    print(f"no match found; searched {found['searched']}; no match is not proof of no use")
                for w in [] if args.json else found["works"]:
                    print(
                        f"{w['record_id'][:16]} {w.get('creator') or 'creator not recorded'} ({w['license_spdx']}): "
                        f"trained versions {', '.join(w['versions']) or 'none'}; {w['match']}"
                    )
                return 0
            try:
                index = requests.WorkIndex(load_params().registry.model_name)
                found = (
                    rights_desk.lookup_image(conn, index, Path(args.image).read_bytes())
                    if args.image
                    else rights_desk.lookup_name(conn, index, args.name)
                )
            except (OSError, ValueError, rights_desk.Refused) as exc:
                print(f"atelier: rights lookup: {getattr(exc, 'message', exc)}", file=sys.stderr)
                return 2
            print(json.dumps(found, indent=2, default=str) if args.json else rights_desk.format_lookup(found))
            return 0
        action = args.queue_command
        if action == "list":
            for r in requests.listed(conn, args.state):
                works = f"{len(r['record_ids'])} works"
                print(f"{r['ref']}  {r['state']:<9}  {r['kind']:<8}  {works}  filed {r['created_at']}")
            return 0
        if action == "advance":
            for r in requests.advance(conn, load_params().registry.model_name):
                print(f"{r['ref']}: {r['state']} ({r['history'][-1]['reason']})")
            return 0
        found = requests.by_ref(conn, args.ref)
        if found is None:
            print(f"atelier: no request with reference {args.ref} (see `atelier rights queue list`)", file=sys.stderr)
            return 2
        by = args.by or getpass.getuser()
        try:
            if action == "show":
                print(json.dumps({k: v for k, v in found.items() if k != "id"}, indent=2))
                return 0
            if action == "approve":
                if found["state"] == "received" and not args.unverified:
                    print(
                        f"atelier: request {found['ref']} is not verified (its requester has not proved control of "
                        "the work); decide with --unverified if you are sure",
                        file=sys.stderr,
                    )
                    return 2
                done = rights_desk.apply(conn, found, by, args.reason or "")
            elif action == "reject":
                done = requests.move(conn, found["id"], "rejected", by, args.reason or "")
            else:  # applied: a credit correction done by hand
                done = requests.move(conn, found["id"], "applied", by, args.reason or "corrected by hand")
        except requests.RequestError as exc:
            print(f"atelier: {exc}", file=sys.stderr)
            return 2
        print(f"{done['ref']}: {done['state']}")
        return 0
    finally:
        conn.close()


def cmd_studio(args: argparse.Namespace) -> int:
    """`studio`: the warm generator (app/studio.py) until Ctrl-C."""
    from app.studio import main as serve_studio

    return serve_studio(args.host, args.port)


def _generate_in_studio(args: argparse.Namespace, out_dir: Path) -> list[dict] | None:
    """The manifests the running studio made for this request, or None when no studio answers (then generate alone).
    A refusal the studio gives is this command's refusal: the same message and exit code as alone."""
    from app import studio

    found = studio.find()
    if found is None:
        return None
    body = {
        "prompt": args.prompt,
        "seed": args.seed,
        "n": args.n,
        "steps": args.steps,
        "guidance": args.guidance,
        "negative_prompt": args.negative_prompt,
        "candidates": args.candidates,
        "out": str(out_dir),
    }
    try:
        answer = studio.request(found, body)
    except ConnectionError as exc:
        print(f"atelier: {exc}; generating in this process", file=sys.stderr)
        return None
    except studio.StudioError as exc:
        if exc.kind == "refused":
            from stages.generate import PromptRefused

            raise PromptRefused(str(exc)) from None
        if exc.kind == "no_champion":
            from stages.generate import NoChampion

            raise NoChampion(str(exc)) from None
        print(f"atelier: the studio at {found['url']} refused the request: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    for warning in answer["warnings"]:
        print(f"atelier: {warning}", file=sys.stderr)
    return answer["manifests"]


def _refuse_audit_options(args: argparse.Namespace) -> str | None:
    """Why these audit options cannot be honoured together (one line), or None."""
    if args.dataset:
        if args.paths:
            return (
                f"audit --dataset audits the training set and takes no artwork paths (got {len(args.paths)}); "
                "audit the artworks in a separate run"
            )
        for flag, given in (("--no-lineage", args.no_lineage), ("--bundle", args.bundle)):
            if given:
                return (
                    f"audit --dataset cannot take {flag}: it recomputes the training set's licenses in this workspace"
                )
    elif not args.paths:
        return "audit needs artwork paths, or --dataset"
    if args.bundle is not None and not Path(args.bundle).is_dir():
        what = "is not a folder" if Path(args.bundle).exists() else "does not exist"
        return f"--bundle {args.bundle} {what}; give the folder that `atelier publish` wrote"
    if args.html is not None:
        html, parent = Path(args.html), Path(args.html).parent
        if html.is_dir():
            return f"--html {args.html} is a folder; give a file name, e.g. {html / 'audit.html'}"
        if not parent.is_dir():
            return f"--html {args.html}: the folder {parent} does not exist; create it or choose another path"
        if not os.access(parent, os.W_OK) or (html.exists() and not os.access(html, os.W_OK)):
            return f"--html {args.html}: cannot write there (permission denied); choose another path"
    return None


def cmd_audit(args: argparse.Namespace) -> int:
    """Audit artworks (credentials, copies, lineage; recovery by watermark/phash) or, with --dataset, the training set.
    Options that cannot be honoured, and an unusable signing folder or bundle, are refused with exit 2."""
    import datetime as dt
    import json

    from app import audit_report
    from atelier.io import write_text
    from atelier.version import code_version

    refused = _refuse_audit_options(args)
    if refused:
        print(f"atelier: {refused}", file=sys.stderr)
        return 2
    meta = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "tool": f"Atelier {code_version()}",
        "anchor": None,
        "mode": "bundle" if args.bundle else "workspace",
    }
    if args.dataset:
        from app.audit_dataset import audit_dataset

        report = audit_dataset()
        print(json.dumps(report, indent=2) if args.json else audit_report.format_dataset_text(report))
        if args.html:
            meta["anchor"] = "none needed: a license audit of the training set"
            try:
                write_text(Path(args.html), audit_report.format_dataset_html(report, meta))
            except OSError as exc:
                print(f"atelier: could not write the HTML report {args.html}: {exc}", file=sys.stderr)
                return 2
        return 0 if not report["problems"] else 1
    from app.audit import audit_files, exit_code, open_context, report_meta

    try:  # the trust anchor and records: an unusable signing folder or bundle is a message, not a traceback
        context = open_context(lineage=not args.no_lineage, bundle=Path(args.bundle) if args.bundle else None)
    except (PermissionError, FileNotFoundError, ValueError) as exc:
        print(f"atelier: {exc}", file=sys.stderr)
        return 2
    results = audit_files([Path(p) for p in args.paths], context)
    meta = report_meta(context)
    print(json.dumps(results, indent=2, default=str) if args.json else audit_report.format_text(results, meta))
    if args.html:
        try:
            write_text(Path(args.html), audit_report.format_html(results, meta))
        except OSError as exc:
            print(f"atelier: could not write the HTML report {args.html}: {exc}", file=sys.stderr)
            return 2
    return exit_code(results)  # 0 verified, 1 tampered, 5 failed, 3 recovered, 4 not an Atelier artwork


def cmd_publish(args: argparse.Namespace) -> int:
    """Write the public verification bundle: trust anchor, model credentials and cards, dataset cards, the signed
    log."""
    from app.bundle import BundleError, publish

    try:
        index = publish(Path(args.folder))
    except BundleError as exc:
        print(f"atelier: {exc}", file=sys.stderr)
        return 2
    print(
        f"published {len(index['files'])} files to {args.folder} ({index['log_entries']} log entries; trust anchor "
        f"{index['trust_anchor']}); an auditor runs `atelier audit --bundle {args.folder} ARTWORK...`"
    )
    return 0


def _target_refused(args: argparse.Namespace, command: str) -> bool:
    """Print why, and say so, when `command` was not given exactly one of a target and an existing --image file."""
    if (args.target is None) == (args.image is None):
        print(f"atelier: {command} needs a creator name or record id, or --image FILE (one of them)", file=sys.stderr)
        return True
    if args.image is not None and not Path(args.image).is_file():
        print(f"atelier: {command} --image {args.image}: no such file", file=sys.stderr)
        return True
    return False


def cmd_takedown(args: argparse.Namespace) -> int:
    """Which models and artworks used a work, creator or picture; opt it out and mark the models (not with
    --dry-run)."""
    import json

    from app.takedown import format_report, takedown

    if _target_refused(args, "takedown"):
        return 2
    try:
        report = takedown(
            args.target,
            reason=args.reason,
            image=None if args.image is None else Path(args.image),
            dry_run=args.dry_run,
            creator=args.creator,
        )
    except ValueError as exc:  # a picture that is not an image, a target that is neither a record nor a creator
        print(f"atelier: takedown {args.target or '--image ' + args.image}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    """Erase a work, a creator's works or a picture's records everywhere (raw store, data, DVC cache, reports,
    ledger), keep a tombstone, mark the models trained on it (not with --dry-run)."""
    import json

    from app.forget import forget, format_report
    from atelier.rawstore import RawStoreKeyError

    if _target_refused(args, "forget"):
        return 2
    try:
        report = forget(
            args.target,
            image=None if args.image is None else Path(args.image),
            reason=args.reason,
            by=args.by or "",
            dry_run=args.dry_run,
            creator=args.creator,
        )
    except (ValueError, RawStoreKeyError) as exc:  # no reason, a picture that is not an image, the raw store's key
        print(f"atelier: forget: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2, default=str) if args.json else format_report(report))
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    """`review`: serve the review page (consent, comparisons, votes into the ledger) until Ctrl-C; `review export
    FOLDER`: write the votes as a Croissant-described dataset (app/review_export.py)."""
    if args.action == "export":
        import json

        from app.review_export import export

        try:
            print(json.dumps(export(Path(args.folder)), indent=2, default=str))  # its summary
        except ValueError as exc:  # e.g. a vote whose reviewer has no recorded consent: nothing is exported
            print(f"atelier: review export: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.action == "prepare":
        from app.review import prepare

        try:
            made = prepare(args.version, args.guidance)
        except ValueError as exc:
            print(f"atelier: review prepare: {exc}", file=sys.stderr)
            return 2
        print(
            f"review prepare: {made['artworks']} artworks from versions {', '.join(made['versions'])} at guidance "
            f"{', '.join(map(str, made['guidances']))}; {made['pairs']} pairs to compare: run `atelier review`"
        )
        return 0
    from app.review import main as serve_review

    return serve_review(args.host, args.port)


def cmd_resolve(args: argparse.Namespace) -> int:
    """`resolve serve`: the C2PA Soft Binding Resolution API's queries over the ledger (read-only) until Ctrl-C."""
    from app.resolve import main as serve_resolve

    return serve_resolve(args.host, args.port, args.ledger, args.artworks, args.public)


def cmd_sources(args: argparse.Namespace) -> int:
    """`sources add`, `sources list`, `sources check`: the sources in params.yaml and their deps in dvc.yaml;
    `sources recheck [NAME]`: mark a url source's earlier fetches as due, so the next ingest checks their opt-outs."""
    from atelier import declared, paths
    from atelier.config import load_params

    root = paths.ROOT
    try:
        if args.action == "add":
            print("\n".join(declared.add_source(root, args.name, args.path, args.kind, args.image_column)))
            return 0
        if args.action == "recheck":
            from stages.ingest import recheck_sources

            print("\n".join(recheck_sources(root, args.name)))
            return 0
        if args.action == "list":
            ingest = load_params(root / "params.yaml").ingest
            found = declared.check(ingest, declared.load_stages(root / "dvc.yaml"), root)
            missing = {p.source: p.path for p in found if p.level == "error"}
            rows = [("name", "kind", "path", "declared in dvc.yaml")]
            rows += [
                (
                    s.name,
                    s.kind,
                    s.path,
                    f"NO: add {missing[s.name]} to stages.ingest.deps" if s.name in missing else "yes",
                )
                for s in ingest.sources
            ]
            widths = [max(len(r[i]) for r in rows) for i in range(3)]
            for row in rows:
                print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[3])
            for p in found:
                if p.source is None:
                    print(f"{p.level}: {p.message}", file=sys.stderr)
            return 0
        warnings = declared.require_declared(root)
        for warning in warnings:
            print(f"atelier: warning: {warning.message}", file=sys.stderr)
        print("sources: every source in params.yaml is a dep of the ingest stage in dvc.yaml")
        return 0
    except ConfigError as exc:
        print(f"atelier: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atelier", description="Dataset-to-artwork pipeline with provenance.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run the pipeline flow once on the sources in params.yaml")
    p.add_argument("--upto", metavar="STAGE", help="stop after this dvc.yaml stage (default: run them all)")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("serve", help="serve the scheduled pipeline deployment (needs PREFECT_API_URL, see `make ui`)")
    p.add_argument("--cron", default="0 3 * * *", help="schedule, cron syntax (default: every day at 03:00)")
    p.add_argument("--name", default="scheduled", help="deployment name (default: scheduled)")
    p.add_argument("--upto", metavar="STAGE", help="scheduled runs stop after this dvc.yaml stage")
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("services", help="the team's services on this machine: up, status or down (docs/team.md)")
    p.add_argument("action", choices=["up", "status", "down"])
    p.add_argument("--dir", default="~/.atelier/services", help="the services' data folder (default: %(default)s)")
    p.add_argument(
        "--only", nargs="+", metavar="SERVICE", help="postgres, s3, mlflow, prefect, worker (and their needs)"
    )
    p.set_defaults(func=cmd_services)
    p = sub.add_parser("worker", help="team mode: run a Prefect worker of the team's work pool in this checkout")
    p.add_argument("--pool", default="atelier")
    p.set_defaults(func=cmd_worker)
    p = sub.add_parser("deploy", help="team mode: deploy the pipeline to the team's work pool (optionally scheduled)")
    p.add_argument("--pool", default="atelier")
    p.add_argument("--cron", help="a cron schedule, e.g. '0 2 * * *' (none: runs only when triggered)")
    p.add_argument("--upto", help="run the stages up to this one")
    p.add_argument("--name", default="nightly")
    p.set_defaults(func=cmd_deploy)
    p = sub.add_parser("data", help="team mode: push this checkout's data and models to the team's remote, or pull")
    p.add_argument("action", choices=["push", "pull"])
    p.set_defaults(func=cmd_data)
    p = sub.add_parser("ledger", help="the ledger: migrate an embedded ledger file into the team's")
    ledger_sub = p.add_subparsers(dest="ledger_command", required=True)
    p = ledger_sub.add_parser("migrate", help="copy a ledger file into the empty team ledger; verify both chains")
    p.add_argument("--from", dest="source", default="ledger/ledger.sqlite", help="default: %(default)s")
    p.set_defaults(func=cmd_ledger_migrate)
    p = sub.add_parser("ui", help="start the Prefect and MLflow servers (UIs) until Ctrl-C")
    p.add_argument("--prefect-port", type=int, default=4200)
    p.add_argument("--mlflow-port", type=int, default=5000)
    p.set_defaults(func=cmd_ui)
    sub.add_parser("summary", help="print the last run's summary").set_defaults(func=cmd_summary)
    p = sub.add_parser("promote", help="gate the challenger, or move the champion alias to --version N")
    p.add_argument("--version", help="registered version to make champion (a person's decision)")
    p.add_argument("--reason", help="why (required with --version; recorded in the registry and the ledger)")
    p.add_argument("--by", help="who decided (default: the OS user)")
    p.set_defaults(func=cmd_promote)
    p = sub.add_parser("generate", help="generate artworks from the champion with provenance manifests")
    p.add_argument("prompt", help="what to make, e.g. 'a blue spiral composition'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=1, help="artworks to make (seeds seed, seed+1, ...)")
    p.add_argument("--steps", type=int, default=None, help="DDIM steps (default: params.yaml generate.steps)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance (default: params.yaml)")
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--out", default=None, help="folder for the artworks and their gallery (default: artworks/)")
    p.add_argument(
        "--candidates",
        type=int,
        default=None,
        help="best-of-K: seeds per artwork (default: params.yaml generate.candidates)",
    )
    p.add_argument("--no-studio", action="store_true", help="generate in this process even when a studio runs")
    p.set_defaults(func=cmd_generate)
    p = sub.add_parser("rights", help="the rights holders' desk: lookups, requests, the operator's queue")
    rights_sub = p.add_subparsers(dest="rights_command", required=True)
    r = rights_sub.add_parser("serve", help="serve the public lookup and request pages until Ctrl-C")
    r.add_argument("--host", default="127.0.0.1")
    r.add_argument("--port", type=int, default=8767)
    r.add_argument("--public", action="store_true", help="allow a non-loopback --host")
    r.set_defaults(func=cmd_rights)
    r = rights_sub.add_parser("lookup", help="was this work used? (a picture, or --name)")
    r.add_argument("image", nargs="?", help="a picture of the work")
    r.add_argument("--name", help="a creator's name, alias or profile URL")
    r.add_argument("--bundle", metavar="DIR", help="look up in a published bundle alone (no workspace needed)")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_rights)
    r = rights_sub.add_parser("queue", help="the operator's queue: list, show, approve, reject, applied, advance")
    queue_sub = r.add_subparsers(dest="queue_command", required=True)
    q = queue_sub.add_parser("list")
    q.add_argument(
        "--state", choices=["received", "verified", "approved", "rejected", "applied", "retrained", "withdrawn"]
    )
    q.set_defaults(func=cmd_rights)
    for name in ("show", "approve", "reject", "applied"):
        q = queue_sub.add_parser(name)
        q.add_argument("ref", help="the request's reference (16 hex digits, from `list`)")
        q.add_argument("--reason", required=name == "reject", help="why (the requester reads it)")
        q.add_argument("--by", help="who decided (default: the OS user)")
        q.add_argument("--unverified", action="store_true", help="approve a request whose claim was not verified")
        q.set_defaults(func=cmd_rights)
    queue_sub.add_parser("advance", help="record retrained versions and withdrawn artworks").set_defaults(
        func=cmd_rights
    )
    p = sub.add_parser("studio", help="keep the champion loaded and make artworks for `atelier generate` in seconds")
    p.add_argument("--host", default="127.0.0.1", help="loopback only (default: %(default)s)")
    p.add_argument("--port", type=int, default=8766, help="default: %(default)s (0: any free port)")
    p.set_defaults(func=cmd_studio)
    p = sub.add_parser("audit", help="verify artworks' provenance, or the training set's licenses (--dataset)")
    p.add_argument("paths", nargs="*", help="artwork files (PNG, or a stripped copy in any image format)")
    p.add_argument("--dataset", action="store_true", help="audit the training set's licenses instead")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--html", metavar="FILE", help="also write an HTML report")
    p.add_argument("--no-lineage", action="store_true", help="skip the registry/DVC lineage checks")
    p.add_argument(
        "--bundle",
        metavar="DIR",
        help="verify with only a published bundle: its trust anchor, "
        "credentials, cards and signed log; no workspace, keys or databases needed",
    )
    p.set_defaults(func=cmd_audit)
    p = sub.add_parser("publish", help="write the public verification bundle (no keys, no local paths) for outsiders")
    p.add_argument("folder", help="where to write it, e.g. public/; publish it as a whole")
    p.set_defaults(func=cmd_publish)
    p = sub.add_parser("sources", help="add, list or check the sources (params.yaml) and their deps (dvc.yaml)")
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser("add", help="add a source to params.yaml and its path to dvc.yaml's ingest deps in one step")
    a.add_argument("name", help="the source's name (lowercase letters, digits, '_' and '-')")
    a.add_argument("path", help="a folder, file, glob or {00000..00099} pattern, relative to the project or absolute")
    a.add_argument("--kind", choices=["folder", "webdataset", "parquet", "urls"], default="folder")
    a.add_argument("--image-column", help="parquet: the column of {bytes, path} images (default: image)")
    actions.add_parser("list", help="each source's name, kind, path and whether dvc.yaml declares it")
    actions.add_parser("check", help="exit 2, naming the fix, when a source's path is not an ingest dep")
    r = actions.add_parser(
        "recheck",
        help="mark a url source's earlier fetches as due: the next ingest checks "
        "robots.txt, TDM-Rep and the headers again (ingest.recheck_after_days)",
    )
    r.add_argument("name", nargs="?", help="the url source (default: every url source)")
    p.set_defaults(func=cmd_sources)
    p = sub.add_parser("takedown", help="which models and artworks used a work, creator or picture; opt it out")
    p.add_argument("target", nargs="?", help="a record id (sha256) or a creator name")
    p.add_argument("--image", metavar="FILE", help="a picture of the work: finds every record whose image matches")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="only answer which versions and artworks used it: nothing is opted out or marked",
    )
    p.add_argument("--reason", default="takedown request")
    p.add_argument("--creator", action="store_true", help="the target is a creator's name, even one not ingested yet")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_takedown)
    p = sub.add_parser(
        "forget",
        help="erase a work, creator or picture everywhere (data, DVC cache, reports, "
        "ledger) and keep a tombstone so it is never ingested again",
    )
    p.add_argument("target", nargs="?", help="a record id (sha256) or a creator name")
    p.add_argument("--image", metavar="FILE", help="a picture of the work: erases every record whose image matches")
    p.add_argument("--reason", required=True, help="why (kept in the tombstone, policy/erasures.csv)")
    p.add_argument("--by", help="who asked (stored as given)")
    p.add_argument("--dry-run", action="store_true", help="only find the records and the models: nothing is erased")
    p.add_argument("--creator", action="store_true", help="the target is a creator's name, even one not ingested yet")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_forget)
    p = sub.add_parser(
        "review",
        help="serve the review page on 127.0.0.1: reviewers compare artworks and vote (votes go to the ledger)",
    )
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port, printed)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    actions = p.add_subparsers(dest="action")
    e = actions.add_parser("export", help="write the votes as a Croissant-described, pseudonymous dataset")
    e.add_argument("folder", help="where to write it")
    r = actions.add_parser(
        "prepare",
        help="make the pairs reviewers compare: each version's artworks for the "
        "generate prompts and seed, at each guidance",
    )
    r.add_argument(
        "--version", action="append", help="a registered version (repeatable; default: the champion and the challenger)"
    )
    r.add_argument(
        "--guidance",
        type=float,
        action="append",
        help="a guidance setting (repeatable; default: params.yaml generate.guidance)",
    )
    p.set_defaults(func=cmd_review)
    p = sub.add_parser(
        "resolve", help="resolve a watermark or an image to its artwork's manifest (C2PA Soft Binding Resolution API)"
    )
    actions = p.add_subparsers(dest="action", required=True)
    r = actions.add_parser(
        "serve", help="serve byBinding, byContent, manifests and supportedAlgorithms over the ledger, read-only"
    )
    r.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; another needs --public)")
    r.add_argument("--port", type=int, default=8010, help="port (default 8010; 0: any free port, printed)")
    r.add_argument("--ledger", type=Path, help="the ledger file (default: ledger/ledger.sqlite)")
    r.add_argument(
        "--artworks", type=Path, help="the signed artworks' folder, for the manifest stores (default: artworks/)"
    )
    r.add_argument("--public", action="store_true", help="allow a non-loopback --host: anyone who reaches it can ask")
    p.set_defaults(func=cmd_resolve)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `atelier` console script."""
    args = build_parser().parse_args(argv)
    from atelier import team as team_mode

    try:
        team_mode.load_env_file()  # team mode: the services' addresses and keys (ATELIER_TEAM_ENV)
        return args.func(args)
    except ConfigError as exc:
        print(f"atelier: configuration error: {exc}", file=sys.stderr)
        return 2
    except team_mode.TeamError as exc:
        print(f"atelier: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from atelier.dvc import StageFailed
        from atelier.lock import WorkspaceBusy
        from stages.generate import NoChampion, PromptRefused

        if isinstance(exc, PromptRefused):
            print(f"atelier: {exc}", file=sys.stderr)
            return 3
        if isinstance(exc, PermissionError):  # a file or folder with the wrong mode or owner: the message says which
            print(f"atelier: {exc}", file=sys.stderr)
            return 2
        if isinstance(exc, (StageFailed, NoChampion, LookupError, WorkspaceBusy, FileNotFoundError)):
            print(f"atelier: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
