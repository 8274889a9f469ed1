"""The package's shape: runtime apart from the lab, imports in one direction, no loops, thin nodes.

The import graph is read from the source (every ``import``, at module level or inside a function),
so a lazy import that hides a loop or an upward arrow is found too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "uir_lora"

# Lower layers never import higher ones; a module may import its own folder and anything below.
LAYERS = {
    "errors": 0,
    "paths": 1, "images": 1, "extras": 1,
    "degrade": 2, "backbones": 2, "global_stage": 2,
    "bank": 3,
    "router": 4, "compose": 4,
    "sampler": 5,
    "pipeline": 6,
    "cli": 7, "commands": 7, "__main__": 7,
    "lab": 8,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """Every uir_lora module ``path`` imports (``from x import y`` counts y when y is a module)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "uir_lora"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "uir_lora":
                base = node.module
            else:
                continue
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    found.discard(name)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = package_modules()
    return {name: imported_modules(name, path, set(modules)) for name, path in modules.items()}


def top_folder(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_graph_is_read(graph):
    # the reader must see the obvious edges, or every test below passes vacuously
    assert "uir_lora.router.router" in graph["uir_lora.pipeline"]
    assert "uir_lora.pipeline" in graph["uir_lora.lab.evaluate.harness"]


def test_no_import_loops(graph):
    """Tarjan's strongly connected components: any component of two or more modules is a loop."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    loops = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in graph.get(module, ()):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                loops.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    assert not loops, f"import loops: {loops}"


def test_imports_point_down(graph):
    upward = [
        f"{source} -> {target}"
        for source, targets in graph.items() for target in targets
        if top_folder(source) != "__init__" and top_folder(target) != "__init__"
        and LAYERS[top_folder(source)] < LAYERS[top_folder(target)]
    ]
    assert not upward, f"upward imports: {upward}"


def test_every_folder_has_a_layer(graph):
    assert {top_folder(m) for m in graph} - {"__init__"} <= set(LAYERS), "a new top folder needs its layer"


def test_runtime_never_imports_the_lab(graph):
    wrong = [f"{s} -> {t}" for s, targets in graph.items() if top_folder(s) != "lab"
             for t in targets if top_folder(t) == "lab"]
    assert not wrong, wrong


def test_nodes_use_only_the_public_surface():
    allowed = {"uir_lora.pipeline", "uir_lora.errors"}
    for path in sorted((ROOT / "nodes").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and "uir_lora" in node.module.split("."):
                names = {f"uir_lora.{alias.name}" for alias in node.names} if node.module == "uir_lora" else \
                    {"uir_lora" + node.module.split("uir_lora", 1)[1]}
                assert names <= allowed, f"{path.name} imports {names - allowed}; use uir_lora.pipeline"


def test_runtime_imports_with_the_lab_blocked():
    """Every runtime module imports in a fresh interpreter in which ``uir_lora.lab`` cannot be imported."""
    runtime = sorted(m for m in package_modules() if top_folder(m) not in {"lab", "__main__"}
                     and not m.endswith("__main__"))
    script = (
        "import importlib, sys\n"
        "sys.modules['uir_lora.lab'] = None  # any import of the lab now raises ImportError\n"
        f"for name in {runtime!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError as exc:\n"
        "        if 'uir_lora.lab' in str(exc) or (exc.name or '').startswith('uir_lora'):\n"
        "            raise\n"
        "        print('optional dependency missing:', name, exc.name)\n"  # e.g. spandrel, an extra
        "assert 'uir_lora.lab' not in {m for m in sys.modules if sys.modules[m] is not None}\n"
        "print('ok', len(sys.argv))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ok" in result.stdout
