"""Training: dispatch to an engine, the reference engine, refit, and the caches that key fits."""
