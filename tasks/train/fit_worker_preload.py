"""Imported once by the fit workers' fork server (tasks.train.fit_workers), so that every
worker forked from it starts with TensorFlow and the reference engine loaded."""

from tasks.train.fit_worker import load_reference_fit

try:
    load_reference_fit()
except Exception:  # noqa: BLE001 (a server that stops refuses every worker; each imports it then)
    pass
