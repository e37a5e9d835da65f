"""The `atelier` command line: run the pipeline, and (as they land) promote, generate, audit."""

from __future__ import annotations

import argparse
import sys

from atelier.config import ConfigError


def cmd_run(args: argparse.Namespace) -> int:
    """Run the whole pipeline once and print the summary."""
    from atelier import dvc
    from atelier.report import format_summary, pipeline_summary

    print(dvc.repro(), end="")
    print(format_summary(pipeline_summary()))
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    """Print the summary of the last run."""
    from atelier.report import format_summary, pipeline_summary

    print(format_summary(pipeline_summary()))
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    """Judge the challenger with the gate, or (with --version) move `champion` to a version as a person decides."""
    from atelier import paths
    from atelier.config import load_params
    from atelier.io import write_json
    from registry import tracking
    from stages import promote

    name = load_params().registry.model_name
    if args.version is None:
        promote.main()
        return 0
    info = tracking.get_version(name, args.version)
    tracking.set_alias(name, tracking.CHAMPION, info["version"])
    record = promote.champion_record(name)
    write_json(paths.CHAMPION, record)
    print(f"champion is now {name} version {record['version']} (run {record['run_id']})")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    """Generate artworks for one prompt from the champion, each with its provenance manifest."""
    from atelier import paths
    from stages.generate import generate_artworks

    manifests = generate_artworks([args.prompt], seed=args.seed, n=args.n, steps=args.steps, guidance=args.guidance,
                                  negative_prompt=args.negative_prompt)
    for m in manifests:
        print(f"{paths.ARTWORKS / m['artwork']['file']}  model v{m['model']['version']}  "
              f"CLIPScore {m['checks']['clip_score']:.3f}  {m['checks']['replication']['verdict']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atelier", description="Dataset-to-artwork pipeline with provenance.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the pipeline once on the sources in params.yaml").set_defaults(func=cmd_run)
    sub.add_parser("summary", help="print the last run's summary").set_defaults(func=cmd_summary)
    p = sub.add_parser("promote", help="gate the challenger, or move the champion alias to --version N")
    p.add_argument("--version", help="registered version to make champion (a person's decision)")
    p.set_defaults(func=cmd_promote)
    p = sub.add_parser("generate", help="generate artworks from the champion with provenance manifests")
    p.add_argument("prompt", help="what to make, e.g. 'a blue spiral composition'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=1, help="artworks to make (seeds seed, seed+1, ...)")
    p.add_argument("--steps", type=int, default=None, help="DDIM steps (default: params.yaml generate.steps)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance (default: params.yaml)")
    p.add_argument("--negative-prompt", default=None)
    p.set_defaults(func=cmd_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `atelier` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"atelier: configuration error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from atelier.dvc import StageFailed
        from stages.generate import NoChampion, PromptRefused

        if isinstance(exc, (StageFailed, NoChampion, LookupError)):
            print(f"atelier: {exc}", file=sys.stderr)
            return 1
        if isinstance(exc, PromptRefused):
            print(f"atelier: {exc}", file=sys.stderr)
            return 3
        raise


if __name__ == "__main__":
    sys.exit(main())
