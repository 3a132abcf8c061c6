"""The import closure of entry modules, read from source (nothing is imported).

Eager (the default) means what runs when the entry module is imported: top-level statements
and class bodies, not function bodies, not `if TYPE_CHECKING:` blocks, not `try: import x /
except ImportError:` fallbacks. With `lazy=True`, imports inside functions count too: what an
image must contain to run every code path.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

# Every product package: a folder of the repository with an __init__.py, less the tooling.
_NOT_PRODUCT = {"tests", "bench", "devstack"}
FIRST_PARTY = tuple(
    sorted(
        folder.name
        for folder in Path(__file__).resolve().parents[2].iterdir()
        if (folder / "__init__.py").is_file() and folder.name not in _NOT_PRODUCT
    )
)


@dataclass
class Closure:
    modules: set[str] = field(default_factory=set)  # first-party modules, dotted
    third_party: set[str] = field(default_factory=set)  # top-level import names

    @property
    def packages(self) -> set[str]:
        return {module.split(".")[0] for module in self.modules}


def module_path(repo: Path, module: str) -> Path | None:
    base = repo.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


class _ModuleLevelImports(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, lazy: bool) -> None:
        self.package = module if is_package else module.rpartition(".")[0]
        self.lazy = lazy
        self.found: list[tuple[str, list[str]]] = []  # (module, names imported from it)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        if self.lazy:  # otherwise: lazy imports run only when called
            self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
        if name == "TYPE_CHECKING":
            for statement in node.orelse:
                self.visit(statement)
            return
        self.generic_visit(node)

    def visit_Try(self, node: ast.Try) -> None:
        optional = any(
            isinstance(handler.type, ast.Name)
            and handler.type.id in {"ImportError", "ModuleNotFoundError"}
            for handler in node.handlers
        )
        if not optional:
            self.generic_visit(node)
            return
        for statement in [*node.orelse, *node.finalbody]:
            self.visit(statement)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append((alias.name, []))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            parts = self.package.split(".")
            parent = ".".join(parts[: len(parts) - node.level + 1])
            module = f"{parent}.{node.module}" if node.module else parent
        else:
            module = node.module or ""
        self.found.append((module, [alias.name for alias in node.names]))


def import_closure(repo: Path, entry_modules: list[str], *, lazy: bool = False) -> Closure:
    closure = Closure()
    pending = list(entry_modules)
    while pending:
        module = pending.pop()
        if module in closure.modules:
            continue
        path = module_path(repo, module)
        if path is None:
            raise FileNotFoundError(f"first-party module {module} has no source file")
        closure.modules.add(module)
        # Importing a.b.c runs a/__init__.py and a/b/__init__.py first.
        parts = module.split(".")
        pending += [".".join(parts[:end]) for end in range(1, len(parts))]
        visitor = _ModuleLevelImports(module, path.name == "__init__.py", lazy)
        visitor.visit(ast.parse(path.read_text(encoding="utf-8")))
        for imported, names in visitor.found:
            top = imported.split(".")[0]
            if top in FIRST_PARTY:
                pending.append(imported)
                pending += [
                    f"{imported}.{name}"
                    for name in names
                    if module_path(repo, f"{imported}.{name}") is not None
                ]
            elif top and top not in sys.stdlib_module_names and top != "__future__":
                closure.third_party.add(top)
    return closure
