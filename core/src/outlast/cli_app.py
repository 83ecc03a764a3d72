"""Loading the user's app (``module:object``) for ``outlast recover`` and ``worker``.

A module that does not import (a syntax error, a missing dependency, an
exception at import time) and an object that is not there are usage errors:
one line with the error's type, message and the file:line where it happened,
exit 2, never a traceback of the importer.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
import traceback
from types import ModuleType
from typing import Any

import click

from outlast.executor import Executor
from outlast.ports import CheckpointerFactory

_MISSING = object()


def load_app(spec: str, store: CheckpointerFactory) -> Executor:
    """The Executor ``spec`` names: an Executor (given ``store`` when it has
    none) or a callable taking the store and returning one."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise click.BadParameter(f"{spec!r} is not module:object", param_hint="APP")
    module = _import(module_name)
    target: Any = module
    for depth, part in enumerate(attribute.split(".")):
        found = getattr(target, part, _MISSING)
        if found is _MISSING:
            owner = ".".join([module_name, *attribute.split(".")[:depth]])
            hint = _did_you_mean(part, target)
            raise click.BadParameter(
                f"{owner!r} ({_where(module)}) has no attribute {part!r}{hint}", param_hint="APP"
            )
        target = found
    if isinstance(target, Executor):
        if target.store is None:
            target.store = store
        return target
    if callable(target):
        built = target(store)
        if isinstance(built, Executor):
            return built
    raise click.BadParameter(
        f"{spec} must be an Executor or a callable taking the store and returning one",
        param_hint="APP",
    )


def _import(module_name: str) -> ModuleType:
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # `outlast recover myapp:app` next to myapp.py
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name or module_name.startswith(f"{exc.name}."):
            raise click.BadParameter(
                f"no module named {exc.name!r} (searched the current directory and "
                "sys.path; set PYTHONPATH or run from the module's folder)",
                param_hint="APP",
            ) from exc
        raise click.BadParameter(_describe(module_name, exc), param_hint="APP") from exc
    except Exception as exc:  # any error at import is the app's: reported in one line
        raise click.BadParameter(_describe(module_name, exc), param_hint="APP") from exc


def _describe(module_name: str, exc: BaseException) -> str:
    """``cannot import 'm': SyntaxError: invalid syntax (m.py:3)``."""
    return f"cannot import {module_name!r}: {type(exc).__name__}: {_message(exc)} ({_origin(exc)})"


def _message(exc: BaseException) -> str:
    if isinstance(exc, SyntaxError):
        return exc.msg  # str(exc) repeats the file and line
    return str(exc) or "(no message)"


def _origin(exc: BaseException) -> str:
    """Where the error happened: the SyntaxError's file:line, else the
    innermost frame outside the import machinery."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}"
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith("<frozen ") and frame.filename != __file__
    ]
    if not frames:
        return "while importing"
    return f"{frames[-1].filename}:{frames[-1].lineno}"


def _where(module: ModuleType) -> str:
    return getattr(module, "__file__", None) or f"module {module.__name__}"


def _did_you_mean(name: str, target: object) -> str:
    close = difflib.get_close_matches(name, [n for n in dir(target) if not n.startswith("_")], 1)
    return f"; did you mean {close[0]!r}?" if close else ""
