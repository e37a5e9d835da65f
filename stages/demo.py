"""demo stage: materialise the built-in demo source folder (data/sources/demo) from params.yaml's `demo` section."""

from __future__ import annotations

from atelier import paths
from atelier.config import load_params
from atelier.demo import write_demo


def main() -> dict:
    """Write the demo folder; return its counts."""
    p = load_params().demo
    summary = write_demo(paths.DEMO_SOURCE, seed=p.seed, per_class=p.per_class, size=p.size)
    print(
        f"demo: {summary['files']} files, {summary['metadata_rows']} metadata rows, "
        f"{summary['planted']} planted defects"
    )
    return summary


if __name__ == "__main__":
    main()
