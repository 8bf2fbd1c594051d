"""Deployment helpers for brandloop: Prefect bootstrap and the label trigger."""
