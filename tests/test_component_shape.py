"""Every KFP component function has the same shape: import its stage, call the entry, log the figures.

    from components import kfp_metrics
    from components.<stage> import stage

    figures = stage.run(**kfp_metrics.task_arguments(locals()))
    kfp_metrics.log_metrics(metrics.log_metric, figures)

At most 5 lines after the docstring. The first statement imports from `components`, so the package's __init__
sets the Keras switch before anything imports TensorFlow. Read with `ast`: no KFP compile needed. A default the
component repeats is the stage entry's (or its settings dataclass's), so a pipeline run and a direct call agree.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 5


def component_functions() -> list[tuple[str, ast.FunctionDef]]:
    found = []
    for path in sorted((ROOT / "components").rglob("component.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and any("component" in ast.unparse(d) for d in node.decorator_list):
                found.append((f"{path.relative_to(ROOT)}:{node.name}", node))
    return found


def body(function: ast.FunctionDef) -> list[ast.stmt]:
    statements = function.body
    if statements and isinstance(statements[0], ast.Expr) and isinstance(statements[0].value, ast.Constant):
        statements = statements[1:]  # the docstring
    return statements


def test_there_are_components():
    assert len(component_functions()) >= 10


@pytest.mark.parametrize("name,function", component_functions(), ids=[name for name, _ in component_functions()])
def test_component_body_is_the_entry_call(name, function):
    statements = body(function)
    span = sum(statement.end_lineno - statement.lineno + 1 for statement in statements)
    assert span <= MAX_LINES, f"{name}: body of {span} lines, at most {MAX_LINES}"
    first = statements[0]
    assert isinstance(first, ast.ImportFrom) and (first.module or "").startswith("components"), (
        f"{name}: the first statement must import from components (the Keras switch)"
    )
    imports = [s for s in statements if isinstance(s, ast.ImportFrom)]
    assert all((s.module or "").startswith("components") for s in imports), f"{name}: imports only from components"
    calls = [s for s in statements if not isinstance(s, ast.ImportFrom)]
    entry = calls[0]
    assert isinstance(entry, (ast.Assign, ast.Expr)), f"{name}: the entry call comes right after the imports"
    text = ast.unparse(entry)
    assert ".run" in text and "**kfp_metrics.task_arguments(locals()" in text, (
        f"{name}: expected <stage>.run...(**kfp_metrics.task_arguments(locals())), got {text}"
    )
    arguments = {a.arg for a in function.args.args}
    rest = [ast.unparse(s) for s in calls[1:]]
    if "metrics" in arguments:
        assert rest and rest[0].startswith("kfp_metrics.log_metrics(metrics.log_metric, figures"), (
            f"{name}: figures go to kfp_metrics.log_metrics, got {rest}"
        )
        rest = rest[1:]
    assert all(line.startswith("return ") for line in rest), f"{name}: nothing after the logging but a return"


def entry_of(path: str, function: ast.FunctionDef):
    """The stage entry a component calls, e.g. components.evaluation.stage.run, imported."""
    import importlib

    statements = body(function)
    modules = {
        alias.asname or alias.name: f"{s.module}.{alias.name}"
        for s in statements
        if isinstance(s, ast.ImportFrom)
        for alias in s.names
    }
    call = next(s for s in statements if not isinstance(s, ast.ImportFrom)).value
    owner, name = call.func.value.id, call.func.attr
    return getattr(importlib.import_module(modules[owner]), name)


# Entries that take `**settings` for a config dataclass: the component's extra defaults must be the dataclass's.
SETTINGS_OF = {"components.retrieval.stage": "components.retrieval.config:RetrievalConfig"}


def entry_defaults(entry) -> dict:
    """The defaults a direct call of the entry uses, those of its `**settings` dataclass included."""
    import dataclasses
    import importlib
    import inspect

    defaults = {}
    if entry.__module__ in SETTINGS_OF:
        module, name = SETTINGS_OF[entry.__module__].split(":")
        defaults = {f.name: f.default for f in dataclasses.fields(getattr(importlib.import_module(module), name))}
    for argument, parameter in inspect.signature(entry).parameters.items():
        if parameter.default is not inspect.Parameter.empty:
            defaults[argument] = parameter.default
    return defaults


@pytest.mark.parametrize("name,function", component_functions(), ids=[name for name, _ in component_functions()])
def test_component_defaults_are_the_stage_entrys(name, function):
    """A default written twice drifts: what a pipeline run gets must be what a direct call of the stage gets."""
    import inspect

    entry = entry_of(name, function)
    expected, required = entry_defaults(entry), set(inspect.signature(entry).parameters)
    written = dict(zip([a.arg for a in function.args.args][-len(function.args.defaults) :], function.args.defaults))
    for argument, node in written.items():
        value = ast.literal_eval(node)
        if value is None or (argument in required and argument not in expected):
            continue  # an optional input artifact (None on both sides), or one the entry requires: one default
        assert argument in expected, f"{name}: {argument} has a default in the component only"
        assert value == expected[argument], (
            f"{name}: {argument}={value!r} in the component, {expected[argument]!r} in {entry.__module__}"
        )
