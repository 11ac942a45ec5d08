"""loadtest/locustfile.py runs the same scenario as loadtest/scenarios/web.py, and says what it needs."""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

import loadtest

HERE = Path(loadtest.__file__).parent


def task_weights(path: Path) -> dict[str, tuple[int, str]]:
    """{task name: (weight, the URL's name as stats group it)} read from the source, not by running it."""
    found: dict[str, tuple[int, str]] = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for deco in node.decorator_list:
            if isinstance(deco, ast.Call) and getattr(deco.func, "id", None) == "task":
                weight = deco.args[0].value if deco.args else 1  # type: ignore[attr-defined]
            elif getattr(deco, "id", None) == "task":
                weight = 1
            else:
                continue
            call = next(n for n in ast.walk(node) if isinstance(n, ast.Call)
                        and getattr(n.func, "attr", None) == "get")
            names = [kw.value.value for kw in call.keywords if kw.arg == "name"]  # type: ignore[attr-defined]
            path_arg = call.args[0]
            found[node.name] = (weight, names[0] if names else ast.unparse(path_arg))
    return found


def test_locustfile_has_the_web_scenarios_tasks_weights_and_names() -> None:
    ours = task_weights(HERE / "scenarios" / "web.py")
    theirs = task_weights(HERE / "locustfile.py")
    assert ours == theirs
    assert ours == {"index": (4, "'/'"), "item": (1, "/item/[id]")}


@pytest.mark.skipif(importlib.util.find_spec("locust") is not None, reason="locust is installed here")
def test_without_locust_the_import_error_says_what_to_do() -> None:
    with pytest.raises(ImportError, match="runs under locust"):
        importlib.import_module("loadtest.locustfile")
