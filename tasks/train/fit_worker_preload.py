"""Imported once by the fit workers' fork server (tasks.train.fit_workers), so that every
worker forked from it starts with TensorFlow and the reference engine loaded."""

from tasks.train.fit_worker import load_reference_fit

load_reference_fit()
