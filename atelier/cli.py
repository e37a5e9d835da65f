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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atelier", description="Dataset-to-artwork pipeline with provenance.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the pipeline once on the sources in params.yaml").set_defaults(func=cmd_run)
    sub.add_parser("summary", help="print the last run's summary").set_defaults(func=cmd_summary)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `atelier` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"atelier: configuration error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # the last line of defence: a clear message, non-zero status
        from atelier.dvc import StageFailed

        if isinstance(exc, StageFailed):
            print(f"atelier: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
