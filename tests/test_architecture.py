"""The house plan, enforced: which parts of scratchlm may import which.

Read the rules below as the plan (docs/architecture.md draws it):

    commands (cli/)            argument parsing and printing; may import everything below
       │
    extras                     doctor, sweep, viz, report, interop, finetune, compare, ablate, guide:
       │                       import the core (and each other), never a command
    core                       config, errors, tokenizer, data, model, train, inference:
                               import only the core; never an extra, never a command

No import cycles between modules; no `from module import _private` across modules;
an import inside a function is either a heavy or optional dependency (listed below)
or carries a comment saying why it is deferred.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "scratchlm"

# ---- the rules --------------------------------------------------------------------------
CORE = {"config", "errors", "tokenizer", "data", "model", "train", "inference"}
EXTRAS = {"doctor", "sweep", "viz", "report", "interop", "finetune", "compare", "ablate", "guide"}
COMMANDS = {"cli", "__main__"}
API = {"__init__"}  # scratchlm/__init__.py: the small public API over the core
MAY_IMPORT = {
    "core": {"core"},
    "extra": {"core", "extra"},
    "command": {"core", "extra", "command", "api"},
    "api": {"core", "api"},
}
# Imported inside functions without a comment: heavy or optional packages, loaded only when used.
HEAVY = {"torch.distributed", "torch.nn.parallel", "matplotlib", "transformers", "sentencepiece", "tiktoken",
         "tiktoken_ext", "tokenizers", "typst", "gguf", "pypdf", "tensorboard", "torch.utils.tensorboard",
         "safetensors", "PIL", "resource", "multiprocessing", "concurrent.futures", "mpl_toolkits"}
# ------------------------------------------------------------------------------------------


def layer_of(module: str) -> str:
    """'scratchlm.train.loop' -> 'core'."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    if top in CORE:
        return "core"
    if top in EXTRAS:
        return "extra"
    if top in COMMANDS:
        return "command"
    if top in API:
        return "api"
    raise AssertionError(f"{module}: its folder '{top}' is in no layer; add it to the rules in {__file__}")


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def resolve(node: ast.ImportFrom, current: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = current.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str, path: Path):
    """(imported module, line, inside a function?, the ast node) for every import in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    known = modules()
    out = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for a in child.names:
                    out.append((a.name, child.lineno, in_function, child))
            elif isinstance(child, ast.ImportFrom):
                target = resolve(child, name, is_package)
                for a in child.names:
                    sub = f"{target}.{a.name}"
                    out.append((sub if sub in known else target, child.lineno, in_function, child))
            visit(child, inside)

    visit(tree, False)
    return out


def internal_edges():
    mods = modules()
    for name, path in mods.items():
        for target, line, in_function, node in imports_of(name, path):
            if target == "scratchlm" or target.startswith("scratchlm."):
                # 'scratchlm.train.loop' may be a module or a name inside one: walk up to a module
                t = target
                while t not in mods and "." in t:
                    t = t.rsplit(".", 1)[0]
                yield name, t, line, in_function, node, path


def test_every_folder_is_in_a_layer():
    for name in modules():
        layer_of(name)


def test_layers_import_only_what_the_plan_allows():
    bad = []
    for src, dst, line, _, node, path in internal_edges():
        if dst == "scratchlm" and src != "scratchlm":
            if layer_of(src) != "command" and [a.name for a in node.names] != ["__version__"]:
                bad.append(f"{path.relative_to(SRC)}:{line}: imports the package root (the public API); import the module")
            continue
        a, b = layer_of(src), layer_of(dst)
        if b not in MAY_IMPORT[a]:
            bad.append(f"{path.relative_to(SRC)}:{line}: {a} module {src} imports {b} module {dst}")
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    graph: dict[str, set[str]] = {}
    for src, dst, *_ in internal_edges():
        if src != dst and not dst.startswith(src + "."):  # a package importing its own modules is not a cycle
            graph.setdefault(src, set()).add(dst)
    # a module inside a package that imports its package's __init__ is fine only if the __init__ does not import it
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def dfs(u):
        state[u] = 1
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if state.get(v) == 1:
                cycles.append(stack[stack.index(v):] + [v])
            elif v not in state:
                dfs(v)
        stack.pop()
        state[u] = 2

    for u in sorted(graph):
        if u not in state:
            dfs(u)
    # a package __init__ that re-exports its submodules forms an ancestor edge: not a real loop
    real = [c for c in cycles if not any(b.startswith(a + ".") or a.startswith(b + ".") for a, b in zip(c, c[1:]))]
    assert not real, "import cycles:\n" + "\n".join(" -> ".join(c) for c in real)


def test_no_private_names_across_modules():
    bad = []
    for src, dst, line, _, node, path in internal_edges():
        if isinstance(node, ast.ImportFrom) and dst != src:
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__"):
                    bad.append(f"{path.relative_to(SRC)}:{line}: imports private {a.name} from {dst}")
    assert not bad, "\n".join(sorted(set(bad)))


def test_deferred_imports_are_heavy_or_explained():
    bad = []
    for name, path in modules().items():
        lines = path.read_text(encoding="utf-8").splitlines()
        for target, line, in_function, node in imports_of(name, path):
            if not in_function:
                continue
            mod = target if isinstance(node, ast.Import) else (node.module or "")
            if any(mod == h or mod.startswith(h + ".") for h in HEAVY):
                continue
            context = lines[line - 1] + (lines[line - 2] if line >= 2 else "")
            if "#" not in context:
                bad.append(f"{path.relative_to(SRC)}:{line}: `{lines[line - 1].strip()}` inside a function "
                           "without a comment saying why it is deferred")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_lines_fit_in_120_columns(path):
    long = [i + 1 for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()) if len(line) > 120]
    assert not long, f"{path.relative_to(SRC)}: lines over 120 characters: {long}"


def core_path() -> list[tuple[str, int]]:
    """(file, lines claimed) from the reading-order table in docs/architecture.md."""
    doc = (SRC.parents[1] / "docs" / "architecture.md").read_text(encoding="utf-8")
    table = doc.split("<!-- core-path")[1].split("\n\n")[0]
    rows = []
    for line in table.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].isdigit():
            rows.append((cells[1], int(cells[2])))
    return rows


def test_core_path_is_short_and_its_table_is_true():
    rows = core_path()
    assert rows, "docs/architecture.md lost its reading-order table"
    wrong = []
    for rel, claimed in rows:
        path = SRC / rel
        assert path.exists(), f"docs/architecture.md lists {rel}, which does not exist"
        actual = len(path.read_text(encoding="utf-8").splitlines())
        if actual != claimed:
            wrong.append(f"{rel}: {actual} lines, the table says {claimed}")
        assert layer_of(module_name(path)) == "core", f"{rel} is on the core path but not in the core"
    assert not wrong, "update the reading-order table in docs/architecture.md:\n" + "\n".join(wrong)
    total = sum(n for _, n in rows)
    assert total <= 1500, f"the core path is {total} lines (at most 1,500): move what is not the lesson out of it"
