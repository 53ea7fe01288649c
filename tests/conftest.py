"""Loaded by pytest before any test module: importing the package sets the Keras 2 switch (components/__init__.py)
before a test module imports TensorFlow itself, so `pytest` works without TF_USE_LEGACY_KERAS in the shell.

`make test TEST_WORKERS=2` runs the suite on two pytest-xdist workers with `--dist loadgroup`, grouped here: each test module goes
to one worker whole (its module-scoped fixtures, such as a whole DAG run, are built once), and so does each folder of
SHARED, whose conftest.py builds slow session fixtures that several of its modules use. The groups holding an
end-to-end (`slow`) test are sent out first, so that no long one is left to run alone at the end."""

from pathlib import Path

import pytest

import components  # noqa: F401  (the import is the point: see the docstring)

TESTS = Path(__file__).parent
# Folders whose session fixtures are slow to build (serving: the tiny shop through every stage; retrieval: a trained
# two-tower; production: the compiled DAG): their tests run on one worker, so each fixture is built once.
SHARED = ("serving", "retrieval", "production")


def group_of(nodeid: str) -> str:
    """The work unit of a test id ("tests/serving/test_server.py::test_x[a]" -> "tests/serving")."""
    path = nodeid.split("::", 1)[0]
    parts = path.split("/")
    if len(parts) > 2 and parts[0] == TESTS.name and parts[1] in SHARED:
        return "/".join(parts[:2])
    return path


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """--dist loadgroup by group_of. (xdist 3.8's own loadgroup reads `xdist_group` marks into the test ids through
    an attribute that pytest 9 no longer has, so its groups never form.)"""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

    return GroupScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    if hasattr(config, "workerinput"):  # an xdist worker: the groups with an end-to-end (slow) test go out first
        slow = {group_of(item.nodeid) for item in items if item.get_closest_marker("slow")}
        items.sort(key=lambda item: group_of(item.nodeid) not in slow)  # stable: each group keeps its order
