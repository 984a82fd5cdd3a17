"""The dependency direction, read from the source's imports (every import, also those inside functions).

config <- judges / payload <- mlflow_io / verdict <- monitor <- controls <- tasks <- worker <- enqueue <- cli; testing on top.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "tracejudge"

#: Each module's layer: a module may import only its own layer or lower ones.
LAYERS = {
    "config": 0,
    "ops": 0.5,  # metrics, broker readings, loop health, the metrics server: recorded from every layer above
    "judges": 1,
    "mlflow_io": 2,
    "verdict": 2,
    "monitor": 2.5,  # reads back through mlflow_io; tasks records rollups, the worker's beat task checks alerts
    "payload": 1.5,  # the queue's message: built by the producer and the controls, read by the evaluation
    "controls": 2.7,  # sampling, filters, budget, cache, counters, judged record, pick-up, deferred release
    "tasks": 3,
    "sessions": 3,  # judging conversations: beside tasks, reusing its runtime
    "worker": 4,
    "publish": 5,
    "sender": 5,
    "enqueue": 5,
    "session_enqueue": 5,  # enqueue_session
    "session_backfill": 5,  # tracejudge backfill --sessions
    "backfill": 5,  # judges traces already in MLflow through enqueue
    "offline": 5,  # our judges as MLflow scorers, regression datasets, the offline gate
    "cli_controls": 6,
    "cli_offline": 6,
    "status": 6,  # tracejudge status
    "judge_quality": 6,  # tracejudge calibrate / agreement
    "display": 6,
    "cli": 6,
    "demo": 6,
    "reference": 7,  # the docs' generated references: reads the CLI's parsers
    "__main__": 6,
    "__init__": 6,
    "testing": 6,
}
#: Units of one layer that must not import each other.
SIBLINGS_APART = [("mlflow_io", "verdict")]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def unit(module: str) -> str:
    """``tracejudge.tasks.evaluate`` -> ``tasks``; ``tracejudge`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports_of(path: Path) -> set[str]:
    """Every module this file imports, absolute (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            for alias in node.names:  # ``from tracejudge.tasks import runtime`` imports a module too
                found.add(f"{target}.{alias.name}")
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for target in imports_of(path):
            if target in modules and target != name:
                edges[name].add(target)
        edges.setdefault(name, set())
    return edges


def third_party(path: Path) -> set[str]:
    return {name.split(".")[0] for name in imports_of(path) if not name.startswith("tracejudge")}


def test_every_module_has_a_layer():
    assert {unit(m) for m in graph()} <= set(LAYERS), "a new top-level module needs a layer here and in docs/architecture.md"


def test_dependencies_run_one_way():
    wrong = [
        f"{src} imports {dst}"
        for src, targets in graph().items()
        for dst in targets
        if LAYERS[unit(dst)] > LAYERS[unit(src)]
    ]
    wrong += [
        f"{src} imports {dst}"
        for src, targets in graph().items()
        for dst in targets
        for a, b in SIBLINGS_APART
        if {unit(src), unit(dst)} == {a, b}
    ]
    wrong += [f"{src} imports {dst}" for src, targets in graph().items() if unit(src) == "testing" for dst in targets if unit(dst) in ("cli", "demo")]
    assert not wrong, "imports against the layering:\n" + "\n".join(sorted(wrong))


def test_no_import_circles():
    edges = graph()
    circles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if nxt.startswith(node + "."):
                continue  # a package importing its own submodules (its public names) is not a circle
            if state.get(nxt) == 1:
                circles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_worker_is_only_the_celery_shell():
    for path in (PACKAGE / "worker").rglob("*.py"):
        assert "mlflow" not in third_party(path), f"{path.name} imports mlflow"
        assert not any(
            name == "tracejudge.mlflow_io" or name.startswith("tracejudge.mlflow_io.") for name in imports_of(path)
        ), f"{path.name} imports mlflow_io"


def test_only_mlflow_io_talks_to_mlflow_in_the_worker_path():
    """tasks, worker and the producer reach MLflow only through mlflow_io's TraceStore."""
    for name in ("tasks", "worker", "publish.py", "sender.py", "verdict.py"):
        for path in ([PACKAGE / name] if name.endswith(".py") else list((PACKAGE / name).rglob("*.py"))):
            assert "mlflow" not in third_party(path), f"{path.relative_to(PACKAGE)} imports mlflow"


def test_imports_inside_functions_are_read():
    assert "tracejudge.worker" in imports_of(PACKAGE / "cli.py")  # only inside run_worker()


@pytest.mark.parametrize("circle", [("tracejudge.cli", "tracejudge.demo"), ("tracejudge.enqueue", "tracejudge.sender"),
                                    ("tracejudge.worker.celery_app", "tracejudge.worker.task")])
def test_the_circles_of_issue_9_are_gone(circle):
    a, b = circle
    edges = graph()
    assert not (b in edges[a] and a in edges[b]), f"{a} and {b} import each other"


ENV_READS = ("os.environ.get(", "os.getenv(", "os.environ[", "environ.get(")
#: Modules that may touch the environment: config (Settings), and helpers that hand it on to child processes.
ENV_ALLOWED = ("config", "testing", "demo")


def test_environment_is_read_only_in_settings():
    readers = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if unit(module_name(path)) not in ENV_ALLOWED and any(r in path.read_text() for r in ENV_READS)
    ]
    assert not readers, f"read environment variables in config.Settings, not in {readers}"


def test_environment_reference_documents_every_environment_variable():
    """docs/reference/environment.md (generated from Settings) names every variable; the README links to it."""
    from tracejudge.config.settings import ENVIRONMENT_VARIABLES

    reference = (SRC.parent / "docs" / "reference" / "environment.md").read_text()
    missing = [name for name in ENVIRONMENT_VARIABLES.values() if f"`{name}`" not in reference]
    assert not missing, f"docs/reference/environment.md lacks {missing} (run: python -m tracejudge.reference --write docs)"


def documented_imports() -> dict[str, set[str]]:
    """docs/architecture.md's module table: unit -> the units its last column names."""
    import re

    table: dict[str, set[str]] = {}
    for line in (SRC.parent / "docs" / "architecture.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        names = [n.rstrip("/").removesuffix(".py") for n in re.findall(r"`([^`]+)`", cells[0])]
        listed = {("__init__" if n == "tracejudge" else n) for n in re.findall(r"`([^`]+)`", cells[-1])}
        for name in names:
            table[name] = listed
    return table


def test_architecture_table_names_every_import_arrow_and_no_other():
    actual: dict[str, set[str]] = defaultdict(set)
    for src, targets in graph().items():
        for dst in targets:
            if unit(src) != unit(dst):
                actual[unit(src)].add(unit(dst))
    documented = documented_imports()
    assert set(documented) >= set(LAYERS) - {"__init__", "__main__"}, "every package and module has a row"
    wrong = {
        name: {"missing from the table": sorted(actual[name] - listed), "named but not imported": sorted(listed - actual[name])}
        for name, listed in documented.items()
        if listed != actual[name]
    }
    assert not wrong, wrong
