"""The `foldflow` command (its implementation lives in flows.cli)."""

import foldflow  # noqa: F401 (foldflow's own tasks and flows, whatever the working folder holds)
from flows.cli import main, run

__all__ = ["main", "run"]

if __name__ == "__main__":
    main()
