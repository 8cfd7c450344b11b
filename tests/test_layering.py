"""The package's layering, read from its own import statements (AST: every ``import`` / ``from ... import`` in a
module, at its top or inside a function, since a lazy import is a dependency all the same), and the size limits.

The floors, top to bottom; a module imports from its own floor or from below, never from above:

    cli.py, sweeps/cli.py, inference_cli.py the ``fedvsr`` command (it draws the run plots, with report.py)
    report.py, compare.py                   figures and tables drawn from results
    sweeps/                                 Ray Tune + Optuna sweeps of experiments
    inference.py                            model loading and tiled restoration of real videos
    platform/, preflight.py                 the Ray runtime: it returns rows and a summary, and never draws
    evaluation.py                           PSNR / SSIM of a model or of bicubic
    fl/, models/, data/                     federated logic (no Ray), model families, video data
    config.py, metrics.py, stats.py         base modules

What is enforced here: no import cycle among fedvsr modules (but the model registry's, see REGISTRY_CYCLE); nothing
in platform/, fl/, data/ or models/ imports sweeps/, report.py, compare.py, cli.py, inference_cli.py or
inference.py; no file in fedvsr/ over 600 lines; no function over 80 lines (the long ones being cut down now are
listed, and the lists only shrink). config.py reads the model and degradation registries to validate their keys:
the base floor is not checked against the floors above it. Fast: nothing is imported, the files are parsed.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "fedvsr"
MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 80
#: the floors that must not reach the top ones
LOWER = ("fedvsr.platform", "fedvsr.fl", "fedvsr.data", "fedvsr.models")
#: the top floors
UPPER = (
    "fedvsr.sweeps",
    "fedvsr.report",
    "fedvsr.compare",
    "fedvsr.cli",
    "fedvsr.inference",
    "fedvsr.inference_cli",
)

#: the one cycle kept on purpose (BasicSR's registry pattern): each built-in model family registers itself into
#: the registry when imported, and the registry imports the package (its explicit list of the families) on first
#: use, so that ``build_model`` finds them whatever was imported first
REGISTRY_CYCLE = [
    "fedvsr.models",
    "fedvsr.models.basicvsr",
    "fedvsr.models.basicvsrpp",
    "fedvsr.models.efvsr",
    "fedvsr.models.fca2",
    "fedvsr.models.fcvsr",
    "fedvsr.models.registry",
    "fedvsr.models.vsrgan",
]
#: files allowed over the limit (none since the architecture step; the list may only shrink)
LONG_FILES: dict[str, int] = {}
#: functions over the limit (``file:qualified name``: lines from ``def`` to the last line), as above
LONG_FUNCTIONS: dict[str, int] = {}


@functools.cache
def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text())


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The fedvsr modules ``path`` imports: ``from fedvsr.a import b`` is ``fedvsr.a.b`` when that is a module,
    else ``fedvsr.a``; relative imports are resolved against the module's package; imports under
    ``if TYPE_CHECKING:`` (for annotations, never run) are left out."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    tree = parse(path)
    typing_only = {
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and ast.unparse(block.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
        for stmt in block.body
        for n in ast.walk(stmt)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *filter(None, [base])])
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
    return {m for m in found if m in known}


@functools.cache
def import_graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(path, set(mods)) - {name} for name, path in mods.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_the_import_reader_sees_lazy_and_relative_imports(tmp_path):
    pkg = tmp_path / "fedvsr"
    (pkg / "data").mkdir(parents=True)
    (pkg / "data" / "__init__.py").write_text("")
    (pkg / "data" / "video.py").write_text("def f():\n    from fedvsr.data import degrade\n")
    (pkg / "data" / "degrade.py").write_text("from . import video\nfrom ..data.video import f\n")
    known = {"fedvsr", "fedvsr.data", "fedvsr.data.video", "fedvsr.data.degrade"}
    global PACKAGE
    saved, PACKAGE = PACKAGE, pkg
    try:
        assert imports_of(pkg / "data" / "video.py", known) == {"fedvsr.data.degrade"}
        assert imports_of(pkg / "data" / "degrade.py", known) == {"fedvsr.data.video"}
    finally:
        PACKAGE = saved
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_among_fedvsr_modules():
    graph = import_graph()
    assert len(graph) > 70 and "fedvsr.data.video" in graph["fedvsr.data.probe"]  # the reader sees the package
    assert [c for c in cycles(graph) if c != REGISTRY_CYCLE] == []


def test_the_runtime_and_the_layers_below_it_never_import_the_top_floors():
    wrong = sorted(
        f"{m} imports {t}"
        for m, targets in import_graph().items()
        if _under(m, LOWER)
        for t in targets
        if _under(t, UPPER)
    )
    assert wrong == []


def test_no_file_over_600_lines():
    sizes = {str(p.relative_to(PACKAGE.parent)): p.read_text().count("\n") for p in modules().values()}
    over = {f: n for f, n in sizes.items() if n > MAX_FILE_LINES}
    assert {f: n for f, n in over.items() if f not in LONG_FILES} == {}
    assert [f for f in LONG_FILES if f not in over] == [], "under the limit now: remove it from LONG_FILES"
    assert all(over[f] <= n for f, n in LONG_FILES.items()), "an allowed long file grew"


def function_lengths(path: Path) -> dict[str, int]:
    """``qualified name -> lines`` (``def`` line to last line, decorators aside) of every function in ``path``."""
    out = {}

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    out[name] = child.end_lineno - child.lineno + 1
                walk(child, name + ".")
            else:
                walk(child, prefix)

    walk(parse(path), "")
    return out


def test_no_function_over_80_lines():
    lengths = {
        f"{p.relative_to(PACKAGE.parent)}:{name}": n
        for p in modules().values()
        for name, n in function_lengths(p).items()
    }
    over = {f: n for f, n in lengths.items() if n > MAX_FUNCTION_LINES}
    assert {f: n for f, n in over.items() if f not in LONG_FUNCTIONS} == {}
    assert [f for f in LONG_FUNCTIONS if f not in over] == [], "under the limit now: remove it from LONG_FUNCTIONS"
    assert all(over[f] <= n for f, n in LONG_FUNCTIONS.items()), "an allowed long function grew"
