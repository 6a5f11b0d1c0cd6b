"""Prefect flows: wiring only, reading like the pipeline they run."""
