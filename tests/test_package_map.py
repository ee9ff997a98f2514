"""The package's shape, which the reader of the source relies on.

- No import circle: the imports of every module (read with `ast`, imports inside functions
  included) form a graph without a cycle, module by module and folder by folder, and each
  folder imports only the folders below it in FLOORS.
- The core models are only the models: GPT and Llama each fit in 300 lines and say nothing of
  fine-tuning, which composes on them from numpygpt/finetune.
- No module is too long to read in one sitting (900 lines).
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "numpygpt"
# The stages of the data's trip, bottom up: a folder (or top-level module) imports only from
# its own floor and the floors below it.
FLOORS = [
    {"errors"},
    {"io"},
    {"data"},
    {"layers"},
    {"kernels"},
    {"models"},
    {"training"},
    {"finetune"},
    {"gradcheck"},
    {"course", "bench"},
    {"cli", "__main__", "__init__"},
]
FINETUNE_WORDS = ("lora", "classif", "frozen", "freeze", "trainable", "prune", "adapter")


def module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name, path):
    """The numpygpt modules that module `name` imports, anywhere in its code."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "numpygpt"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "numpygpt":
                continue
            for a in node.names:  # `from . import layers`: the submodule itself
                sub = f"{target}.{a.name}"
                found.add(sub if sub in MODULES else target)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: imports_of(name, path) for name, path in MODULES.items()}


def find_cycle(graph):
    """A list of nodes forming a cycle, or None (depth-first search)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def stage(name):
    """The folder or top-level module a module belongs to: numpygpt.io.files -> "io"."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def floor(name):
    return next(i for i, f in enumerate(FLOORS) if stage(name) in f)


def test_the_walk_sees_the_imports_it_should():
    # a sanity check of the walk itself: an import inside a function counts too
    assert "numpygpt.models.gpt" in GRAPH["numpygpt.models.registry"]
    assert "numpygpt.layers" in GRAPH["numpygpt.models.gpt"]  # `from .. import layers as L`
    assert "numpygpt.training.train" in GRAPH["numpygpt.cli"]  # inside cmd_train
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_module_imports_one_that_imports_it_back():
    assert find_cycle(GRAPH) is None, " -> ".join(find_cycle(GRAPH))


def test_no_folder_imports_one_that_imports_it_back():
    folders = {}
    for name, deps in GRAPH.items():
        folders.setdefault(stage(name), set()).update(stage(d) for d in deps
                                                      if stage(d) != stage(name))
    assert find_cycle(folders) is None, " -> ".join(find_cycle(folders))


def test_every_folder_imports_only_the_floors_below_it():
    assert {stage(n) for n in MODULES} == set().union(*FLOORS)
    upward = [f"{name} -> {dep}" for name, deps in GRAPH.items() for dep in deps
              if floor(dep) > floor(name)]
    assert not upward, upward


def class_source(path, class_name):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name)
    lines = path.read_text(encoding="utf-8").splitlines()
    return lines[node.lineno - 1:node.end_lineno]


@pytest.mark.parametrize("module, cls", [("models/gpt.py", "GPT"), ("models/llama.py", "Llama"),
                                         ("models/base.py", "LanguageModel")])
def test_the_core_models_are_only_the_models(module, cls):
    lines = class_source(PACKAGE / module, cls)
    assert len(lines) <= 300, f"{cls} is {len(lines)} lines"
    text = "\n".join(lines).lower()
    said = [w for w in FINETUNE_WORDS if w in text]
    assert not said, f"{cls} speaks of fine-tuning: {said}"


def test_no_module_is_over_900_lines():
    long = {name: n for name, path in MODULES.items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > 900}
    assert not long, long
