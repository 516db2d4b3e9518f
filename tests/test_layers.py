"""The package is one-way: every import points down the layers of docs/architecture.md, none back up.

Imports are read with ``ast`` from every module, at top level and inside functions; a module may import
its own layer or a lower one, and imports inside one layer (a package) must not form a cycle. No module
imports another module's ``_private`` names, and no module outside ``hpstudy/_kt_compat.py`` touches a
``_private`` attribute of another object (Keras Tuner's private members have one seam).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hpstudy"

# Bottom to top. A module belongs to the first entry that equals its dotted name or is a prefix of it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("hpstudy.errors", "hpstudy._io", "hpstudy._log"),
    ("hpstudy.paths",),
    ("hpstudy.records",),
    ("hpstudy.runtime", "hpstudy._kt_compat"),
    ("hpstudy.config",),
    ("hpstudy.data",),
    ("hpstudy.models",),
    ("hpstudy.features",),
    ("hpstudy.trials", "hpstudy.boundary", "hpstudy.warmstart"),
    ("hpstudy.search",),
    ("hpstudy.selection",),
    ("hpstudy.study",),
    ("hpstudy.extend",),
    ("hpstudy.metrics", "hpstudy.metrics_figures", "hpstudy.calibration"),
    ("hpstudy.finetune",),
    ("hpstudy.operating",),
    ("hpstudy.finalize",),
    ("hpstudy.evaluation_sets", "hpstudy.evaluate"),
    ("hpstudy.gradcam", "hpstudy.gradcam_figures"),
    ("hpstudy.probes", "hpstudy.probes_figures"),
    ("hpstudy.explain",),
    ("hpstudy.report",),
    ("hpstudy.repeats",),
    ("hpstudy.demo",),
    ("hpstudy.cli",),
)
# Attribute names outside this package that look private but are documented public API.
PUBLIC_UNDERSCORE = {"_exit"}  # os._exit


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def rank(module: str) -> int:
    if module == "hpstudy":  # the package root: errors and the logger at import, the rest lazily by name
        return 0
    for index, layer in enumerate(LAYERS):
        if any(module == name or module.startswith(name + ".") for name in layer):
            return index
    raise AssertionError(f"{module} is in no layer of tests/test_layers.py: add it to LAYERS")


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports(module: str, path: Path, known: dict[str, Path]) -> Iterator[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every hpstudy import in a module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("hpstudy"):
                    yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, node, path.name == "__init__.py")
            if not source.startswith("hpstudy"):
                continue
            for alias in node.names:
                child = f"{source}.{alias.name}"
                if child in known:  # `from hpstudy import study` imports a module
                    yield child, None, node.lineno
                else:
                    yield source, alias.name, node.lineno


def _targets(module: str, path: Path, known: dict[str, Path]) -> Iterator[tuple[str, str | None, int]]:
    for target, name, line in imports(module, path, known):
        if module != "hpstudy" and target != module:  # the package root re-exports lazily, by name
            yield target, name, line


def upward_imports() -> list[str]:
    known = modules()
    found = []
    for module, path in known.items():
        for target, _, line in _targets(module, path, known):
            if rank(target) > rank(module):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {module} imports {target}, a higher layer")
    return found


def private_imports() -> list[str]:
    known = modules()
    found = []
    for module, path in known.items():
        for target, name, line in _targets(module, path, known):
            if name is not None and name.startswith("_"):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {module} imports {name} from {target}")
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def import_cycle() -> list[str] | None:
    known = modules()
    graph: dict[str, set[str]] = {}
    for module, path in known.items():
        for target, _, _ in _targets(module, path, known):
            target = target if target in known else target.rsplit(".", 1)[0]
            if rank(target) == rank(module) and not module.startswith(target + "."):  # a package's own __init__
                graph.setdefault(module, set()).add(target)
    return _cycle(graph)


def private_attribute_access() -> list[str]:
    found = []
    for module, path in modules().items():
        if module == "hpstudy._kt_compat":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Attribute) or not node.attr.startswith("_") or node.attr.startswith("__"):
                continue
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            if isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == "super":
                continue
            if node.attr in PUBLIC_UNDERSCORE:
                continue
            found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {module} uses .{node.attr}")
    return found


def test_every_module_has_a_layer() -> None:
    for module in modules():
        rank(module)


def test_no_import_points_up() -> None:
    assert upward_imports() == []


def test_no_import_cycle_inside_a_layer() -> None:
    assert import_cycle() is None


def test_no_private_name_is_imported_across_modules() -> None:
    assert private_imports() == []


def test_private_members_are_touched_in_the_keras_tuner_seam_only() -> None:
    assert private_attribute_access() == []


@pytest.mark.parametrize("planted", [
    "from hpstudy.study import run_study\n",
    "def late():\n    from hpstudy.report import write_report\n",
])
def test_a_planted_upward_import_is_caught(tmp_path: Path, planted: str, monkeypatch: pytest.MonkeyPatch) -> None:
    target = PACKAGE / "trials.py"
    original = target.read_text(encoding="utf-8")
    monkeypatch.setattr(Path, "read_text", _patched_read_text(target, original + "\n" + planted))
    problems = upward_imports()
    assert any("hpstudy.trials imports" in p for p in problems), problems


def test_a_planted_private_import_and_cycle_are_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    target = PACKAGE / "boundary.py"
    planted = (target.read_text(encoding="utf-8")
               + "\nfrom hpstudy.trials import _metric_sort_key\nx = object()._secret\n")
    monkeypatch.setattr(Path, "read_text", _patched_read_text(target, planted))
    assert any("_metric_sort_key" in p for p in private_imports())
    assert any("._secret" in p for p in private_attribute_access())
    trials = PACKAGE / "trials.py"
    cyclic = trials.read_text(encoding="utf-8") + "\nfrom hpstudy.boundary import boundary_flags\n"
    monkeypatch.setattr(Path, "read_text", _patched_read_text(trials, cyclic))
    assert import_cycle() is not None


def _patched_read_text(target: Path, text: str):  # noqa: ANN202 - a stand-in for Path.read_text
    real = Path.read_text

    def read_text(self: Path, *args: object, **kwargs: object) -> str:
        return text if self == target else real(self, *args, **kwargs)

    return read_text
