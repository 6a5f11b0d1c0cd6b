"""How the `foldflow` command words a refusal: one line, in the option names the user typed,
with no control character (a file's bytes or a library's message quoted in it cannot drive
the terminal)."""

from __future__ import annotations

import argparse

from tasks.messages import escape_controls, os_error_text, validation_line


def option_names(parser: argparse.ArgumentParser, command: str) -> dict[str, str]:
    """Each config field a `command`'s flag sets, and the flag (`n_splits` -> `--folds`), so
    a refusal names the option the user typed (flows.cli.field_flag marks the flags)."""
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {
        action.model_field: action.option_strings[0]
        for action in commands.choices[command]._actions
        if getattr(action, "model_field", None) and action.option_strings
    }


def error_line(error: BaseException, names: dict[str, str] | None = None) -> str:
    """The one line the CLI prints for a refusal: pydantic's errors in the user's option
    names (`names`), an OSError's file and folder, control characters escaped."""
    from pydantic import ValidationError

    if isinstance(error, ValidationError):
        text = validation_line(error.errors(), names or {})
    elif isinstance(error, OSError):
        text = os_error_text(error)
    else:
        text = str(error) or type(error).__name__
    return f"foldflow: error: {escape_controls(text)}"
