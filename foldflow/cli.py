"""The `foldflow` command (its implementation lives in flows.cli)."""

from flows.cli import main, run

__all__ = ["main", "run"]

if __name__ == "__main__":
    main()
