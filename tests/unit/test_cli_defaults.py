"""`foldflow cv|grid|search` flags that stand for a config field take their default and choices
from that field: one place to change each (tasks.config), read by the parser."""

from __future__ import annotations

import argparse
from typing import Literal, get_args, get_origin

import pytest
from pydantic import BaseModel

from flows.cli import build_parser
from tasks.config import CVConfig, GridSearchConfig, ModelParams, SearchConfig

# What each command builds: its flow config (run settings inside), and for `cv` the routed
# training keys its own flags stand for.
COMMAND_DEFAULTS: dict[str, list[BaseModel]] = {
    "cv": [CVConfig(), CVConfig().run, ModelParams()],
    "grid": [GridSearchConfig(), GridSearchConfig().run],
    "search": [SearchConfig(), SearchConfig().run],
}


def command_actions(command: str) -> list[argparse.Action]:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [a for a in commands.choices[command]._actions if a.dest != "help"]


def field_of(action: argparse.Action, defaults: list[BaseModel]) -> tuple[BaseModel, str] | None:
    """The config (default instance) and field an action stands for: the one it names, else
    a field spelled like its destination."""
    name = getattr(action, "model_field", None) or action.dest
    for model in defaults:
        if name in type(model).model_fields:
            return model, name
    assert not hasattr(action, "model_field"), f"{action.option_strings}: no field {name!r}"
    return None


def literal_choices(model: BaseModel, name: str) -> list[object] | None:
    annotation = type(model).model_fields[name].annotation
    return list(get_args(annotation)) if get_origin(annotation) is Literal else None


@pytest.mark.parametrize("command", sorted(COMMAND_DEFAULTS))
def test_every_flag_for_a_field_has_the_fields_default_and_choices(command):
    defaults = COMMAND_DEFAULTS[command]
    checked = []
    for action in command_actions(command):
        found = field_of(action, defaults)
        if found is None:
            continue
        model, name = found
        flag = action.option_strings[0]
        assert hasattr(action, "model_field"), f"{flag}: declare it from {type(model).__name__}"
        if getattr(action, "default_when_omitted", False):
            # A path flag: given, it is taken from the working folder; omitted, the config's
            # own default applies (taken from $FOLDFLOW_HOME), so the parser passes nothing.
            assert action.default is None and "default:" in action.help, flag
        else:
            assert action.default == getattr(model, name), flag
        assert action.choices == literal_choices(model, name), flag
        checked.append(flag)
    assert {"--seed", "--folds", "--workers", "--engine", "--max-fits"} <= set(checked)


def test_folds_default_to_each_commands_own_run_settings():
    folds = {
        command: next(a.default for a in command_actions(command) if a.dest == "folds")
        for command in COMMAND_DEFAULTS
    }
    assert folds == {"cv": 10, "grid": 3, "search": 3}


@pytest.mark.parametrize(
    ("flag", "description"),
    [("--workers", "parallel task runs"), ("--strategy", "random, halving or tpe")],
)
def test_help_says_what_the_field_description_says_and_its_default(flag, description):
    action = next(a for a in command_actions("search") if flag in a.option_strings)
    assert description in action.help and "(default: %(default)s)" in action.help
