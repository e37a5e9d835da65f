"""Prefect flows and deployments: when and how the DVC stages run (orchestration only, no data logic)."""
