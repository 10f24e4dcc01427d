"""The folders show the architecture: imports run down the layers only, and no modules import each other in a
cycle. Read from the source with ast, so lazy imports inside functions count too."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# bottom to top; a module may import its own layer and those below
LAYERS = [
    ("recpie.errors", "recpie.utils", "recpie.config_checks"),
    ("recpie.data",),
    ("data_modules", "recpie.evaluation"),
    ("recpie.components",),
    ("recpie.explainer",),  # the LLM: loading, prompts, generation, its forward helpers (explainer.forward)
    ("recpie.rl",),  # trains the explainer: imports it, never the other way
    ("recpie.models",),
    ("recpie.config", "recpie.config_loading", "recpie.reporting"),
    ("recpie.recipes",),
    ("recpie.cli", "recpie.__main__", "experiments"),
]


def layer(module: str) -> int | None:
    """The layer of the longest matching prefix; None for modules outside the project."""
    if module == "recpie":  # the package's empty __init__
        return 0
    matches = [(len(prefix), i) for i, prefixes in enumerate(LAYERS) for prefix in prefixes
               if module == prefix or module.startswith(prefix + ".")]
    return max(matches)[1] if matches else None


def project_imports() -> dict[str, set[str]]:
    """module -> the project modules it imports (absolute imports; the project uses no relative ones)."""
    paths = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
             for folder in ("recpie", "data_modules", "experiments") for p in (ROOT / folder).rglob("*.py")}
    graph = {}
    for module, path in paths.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # "from package import submodule" imports the submodule, not the package's __init__
                targets |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in paths else node.module
                            for a in node.names}
            elif isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
        graph[module] = {t for t in targets if layer(t) is not None}
    return graph


def test_every_project_module_has_a_layer():
    assert all(layer(m) is not None for m in project_imports())


def test_imports_run_down_the_layers():
    upward = [f"{m} -> {t}" for m, targets in project_imports().items() for t in targets if layer(t) > layer(m)]
    assert upward == []


def test_no_import_cycle():
    graph = project_imports()
    known = {m: {t for t in targets if t in graph} for m, targets in graph.items()}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(known[module]):
            if state.get(target) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(target):] + [target]))
            if target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(known):
        if module not in state:
            visit(module, [module])


def test_an_upward_import_is_caught():
    assert layer("recpie.components.backbone") < layer("recpie.models.recpie_module")
    assert layer("recpie.cli.run") > layer("recpie.recipes.recpie") > layer("recpie.config")
