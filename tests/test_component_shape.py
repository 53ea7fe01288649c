"""Every KFP component function has the same shape: import its stage, call the entry, log the figures.

    from components import kfp_metrics
    from components.<stage> import stage

    figures = stage.run(**kfp_metrics.task_arguments(locals()))
    kfp_metrics.log_metrics(metrics.log_metric, figures)

At most 5 lines after the docstring. The first statement imports from `components`, so the package's __init__
sets the Keras switch before anything imports TensorFlow. Read with `ast`: no KFP compile needed.
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
