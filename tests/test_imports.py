"""Dependencies point one way (archive -> clean -> encode -> train -> artifact -> generator ->
API): no import cycle in the package, and no stage imports a later one or a library it does not
use."""

import ast
import subprocess
import sys

import pytest

from tests.helpers import ROOT

PACKAGES = ("covfefe", "serve")


def _module_name(path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.Module, top_level: bool):
    """The import statements of a module: all of them, or only those that run on import."""
    if not top_level:
        return [node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)]
    found, todo = [], list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If | ast.Try):  # guarded imports still run on import
            todo.extend(node.body + node.orelse + getattr(node, "finalbody", [])
                        + [child for handler in getattr(node, "handlers", [])
                           for child in handler.body])
    return found


def import_graph(top_level: bool = False) -> dict[str, set[str]]:
    """Each module of the package -> the package's modules it imports: anywhere in the file
    (a deferred import inside a function is a dependency too), or only on import."""
    modules = {_module_name(path): path for package in PACKAGES
               for path in sorted((ROOT / package).rglob("*.py"))}
    graph = {}
    for name, path in modules.items():
        imported = set()
        for node in _imports(ast.parse(path.read_text(encoding="utf-8")), top_level):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                # `from covfefe import config` imports covfefe.config when that is a module.
                targets = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}"
                           in modules else node.module for alias in node.names]
            else:
                continue
            imported |= {target for target in targets if target in modules and target != name}
        # The package's __init__ runs first anyway; an edge to it is no cycle of substance.
        graph[name] = imported - set(PACKAGES)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """Return one import cycle (a list of modules, the first repeated last), or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        stack.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[module] = "done"
        stack.pop()
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    # The graph sees real imports:
    assert "covfefe.inference.numpy_network" in graph["covfefe.inference.artifact"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def imported_by(statement: str) -> set[str]:
    """The top-level modules a fresh interpreter has loaded after running ``statement``."""
    result = subprocess.run(
        [sys.executable, "-c", f"{statement}\nimport sys\n"
         "print(' '.join(sorted({name.split('.')[0] for name in sys.modules})))"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def external_imports(path) -> set[str]:
    """The top-level names of every library a source file imports on import."""
    names = set()
    for node in _imports(ast.parse(path.read_text(encoding="utf-8")), top_level=True):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names - set(PACKAGES)


def closure(graph: dict[str, set[str]], module: str) -> set[str]:
    """The package's modules that ``module`` imports, directly or not (itself included)."""
    seen, todo = set(), [module]
    while todo:
        if (current := todo.pop()) not in seen:
            seen.add(current)
            todo.extend(graph[current])
    return seen


def module_path(name: str):
    path = ROOT.joinpath(*name.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def test_training_imports_neither_the_x_client_nor_plotting():
    # What importing covfefe.training.train loads: everything a training run calls, export included.
    used = closure(import_graph(top_level=True), "covfefe.training.train")
    assert {"covfefe.training.scoring", "covfefe.inference.artifact",
            "covfefe.data.store"} <= used
    assert not {"covfefe.data.explore", "covfefe.evaluation.report", "covfefe.data.collect",
                "covfefe.data.twitter", "covfefe.data.archive"} & used
    libraries = set().union(*(external_imports(module_path(name)) for name in used))
    assert not {"tweepy", "matplotlib", "requests"} & libraries, sorted(libraries)
    # And at run time: importing training loads no X client (Keras itself loads matplotlib).
    loaded = imported_by("import covfefe.training.train")
    assert "keras" in loaded  # the probe sees what was imported
    assert "tweepy" not in loaded


@pytest.mark.parametrize("module", ["covfefe.cli", "covfefe.inference.generate", "serve"])
def test_the_serving_side_imports_no_training_stack(module):
    loaded = imported_by(f"import {module}")
    assert not {"pandas", "tensorflow", "keras", "matplotlib", "tweepy"} & loaded


# The stages of the data's journey, in order: a module imports only from its own stage or an
# earlier one (the top-level modules are the common ground before every stage; the command
# line and the notebook runner, the glue, may call any stage).
STAGES = ("covfefe", "covfefe.data", "covfefe.lm", "covfefe.inference", "covfefe.training",
          "covfefe.evaluation", "covfefe.serving")
GLUE = {"covfefe.cli", "covfefe.notebooks", "covfefe.__main__"}


def stage_of(module: str) -> int:
    """The position in `STAGES` of the stage a module of the package belongs to."""
    parts = module.split(".")
    return STAGES.index(".".join(parts[:2]) if len(parts) > 2 or
                        ".".join(parts[:2]) in STAGES else "covfefe")


def test_every_module_belongs_to_a_stage_and_the_top_level_stays_small():
    graph = import_graph()
    packages = {".".join(name.split(".")[:2]) for name in graph
                if name.startswith("covfefe.") and name.count(".") >= 2}
    assert packages <= set(STAGES), sorted(packages - set(STAGES))
    top_level = [name for name in graph if name.startswith("covfefe.") and name.count(".") == 1
                 and name not in STAGES]
    assert len(top_level) <= 12, sorted(top_level)


def test_dependencies_point_one_way_along_the_stages():
    later = [f"{module} imports {target}" for module, targets in import_graph().items()
             if module.startswith("covfefe") and module not in GLUE
             for target in targets
             if target.startswith("covfefe") and stage_of(target) > stage_of(module)]
    assert not later, later


# Compiled code is written as plain numba (@njit through covfefe.compiled), not built from
# numba's or LLVM's internals. The one exception left is the int16 product kernel: plain numba
# (numba 0.68 runs LLVM's loop vectorizer only, not its SLP vectorizer) took 1.3-1.4x its time
# for one row and 1.6-9.5x for 4 to 16 rows (see covfefe.inference.fixedpoint), and no library
# found does an exact int16 product faster.
COMPILER_INTERNALS = ("llvmlite", "numba.core", "numba.extending")
USES_COMPILER_INTERNALS = {"covfefe.inference.fixedpoint"}


def test_no_module_builds_code_from_the_compilers_internals():
    users = set()
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in _imports(ast.parse(path.read_text(encoding="utf-8")), top_level=False):
                names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""])
                if any(name == internal or name.startswith(f"{internal}.")
                       for name in names for internal in COMPILER_INTERNALS):
                    users.add(_module_name(path))
    assert users == USES_COMPILER_INTERNALS, sorted(users)


def test_no_module_imports_another_modules_private_names():
    found = []
    for package in (*PACKAGES, "bench"):  # the benchmarks use the package as a user would
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in _imports(ast.parse(path.read_text(encoding="utf-8")), top_level=False):
                if isinstance(node, ast.ImportFrom):
                    found += [f"{_module_name(path)}: from {node.module} import {alias.name}"
                              for alias in node.names
                              if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert not found, found
