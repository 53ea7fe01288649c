"""Data flows forward only: no module of components/ imports a stage that runs after its own, and no import circle.

The imports are read with `ast` (module-level and function-level alike: a lazy import is a dependency too), so
the test needs none of the heavy packages. STAGES is the order of the data path; a module belongs to the stage of
its longest matching prefix. docs/architecture.md explains each stage's place.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "components"

# Earliest first. A module may import modules of its own stage or of an earlier one.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    # What every stage shares: the contracts, file helpers, the A/B hash, the metrics and the KFP helpers.
    (
        "shared",
        (
            "components",
            "components.schema",
            "components.ab",
            "components.atomic",
            "components.metrics",
            "components.kfp_metrics",
            "components.progress",
            "components.run_time",
            "components.image",
            # the last blessed model: read by features (data checks), retrieval (warm start), evaluation, export
            "components.registry",
            # what the retrieval and ranking warm starts share (the weights file, rows carried by id)
            "components.warm_start",
            # the tf.distribute strategy both trainers build under (set by the machine: cloud/resources.py)
            "components.distribution",
        ),
    ),
    # The warehouse: the shop's tables and the SQL engines that every stage queries it through.
    ("warehouse", ("components.warehouse",)),
    ("extract", ("components.extract",)),
    ("features", ("components.features",)),
    ("retrieval", ("components.retrieval",)),
    # The funnel's logic (retrieve, re-rank, fuse the two scores) on Protocol-typed models: ranking's training
    # chooses the fusion weight with it, evaluation measures it, export and serving run it.
    ("funnel", ("components.serving.funnel", "components.serving.fusion")),
    ("ranking", ("components.ranking",)),
    # The trained pair loaded as one servable model.
    ("serving model", ("components.serving.models",)),
    ("evaluation", ("components.evaluation", "components.baselines")),
    ("export", ("components.export",)),
    # Experiments read the other stages' outputs (the ranker, the logged impressions, the export's A/B outcomes);
    # evaluation reads the off-policy report as a file whose keys are schema.OPE_ESTIMATORS.
    ("experiments", ("components.experiments",)),
    # The serving bundle and the prediction server: built from the blessed model once export has written its lists.
    ("serving", ("components.serving",)),
    # Upload to the Model Registry and deploy; task resources and Dataflow options (read by pipelines/ only).
    ("cloud", ("components.cloud",)),
)


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path = ROOT) -> dict[str, Path]:
    return {module_name(path, root): path for path in sorted((root / PACKAGE).rglob("*.py"))}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The components modules that `name` imports anywhere in its file (a package's __init__ counts as the package)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {target for target in found if target in known and target != name}


def stage_of(name: str) -> int:
    best, index = "", -1
    for position, (_, prefixes) in enumerate(STAGES):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > len(best):
                best, index = prefix, position
    assert index >= 0, f"{name} belongs to no stage: add it to STAGES"
    return index


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    found = modules(root)
    known = set(found)
    return {name: imports(name, path, known) for name, path in found.items()}


def test_every_module_has_a_stage():
    for name in modules():
        stage_of(name)


def test_no_module_imports_a_later_stage():
    backward = [
        f"{name} ({STAGES[stage_of(name)][0]}) imports {target} ({STAGES[stage_of(target)][0]})"
        for name, targets in graph().items()
        for target in sorted(targets)
        if stage_of(target) > stage_of(name)
    ]
    assert not backward, "imports against the data flow:\n" + "\n".join(backward)


def test_there_is_no_import_circle():
    edges = graph()
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    circles: list[list[str]] = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(edges[name]):
            if state.get(target) == 1:
                circles.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[name] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(circle) for circle in circles)


def test_the_check_sees_a_backward_import_and_a_circle(tmp_path):
    """The walk itself: a planted backward import and a planted circle are both reported."""
    (tmp_path / PACKAGE / "extract").mkdir(parents=True)
    (tmp_path / PACKAGE / "__init__.py").write_text("")
    (tmp_path / PACKAGE / "extract" / "__init__.py").write_text("")
    (tmp_path / PACKAGE / "extract" / "a.py").write_text("from components.export import b\nfrom . import c\n")
    (tmp_path / PACKAGE / "extract" / "c.py").write_text("def f():\n    from components.extract import a\n")
    (tmp_path / PACKAGE / "export").mkdir()
    (tmp_path / PACKAGE / "export" / "__init__.py").write_text("")
    (tmp_path / PACKAGE / "export" / "b.py").write_text("")
    edges = graph(tmp_path)
    assert edges["components.extract.a"] == {"components.export.b", "components.extract.c"}
    assert edges["components.extract.c"] == {"components.extract.a"}
    assert stage_of("components.export.b") > stage_of("components.extract.a")
