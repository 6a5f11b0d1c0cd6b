"""Pipeline stages: plain functions that do the work, and thin Prefect task wrappers naming them."""

import os
import sys

if "tensorflow" not in sys.modules:
    # TensorFlow reads its C++ log level once, on import. Level 3 (errors off) unless the user
    # chose one: loading a program from the compiled-program cache (tasks.train.xla_cache) makes it
    # log two false alarms as errors (a text-format parse it then falls back from, and XLA
    # tuning flags taken for CPU features); real failures still reach Python as exceptions.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
