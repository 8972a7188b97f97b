"""The project's import graph, drawn from the source with `ast` (no imports are executed).

    python scripts/import_graph.py                 # package -> package edges, with the modules behind each
    python scripts/import_graph.py --modules       # every module -> module edge inside the project
    python scripts/import_graph.py --dot > g.dot   # the package graph for Graphviz

Only imports of the project's own top-level packages count; standard library and third-party
imports are left out. A module's package is its top-level folder (service, training, ...), except
that service's layers (service.api, .workflows, .inference, .inputs) are shown on their own.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = {"tests", "scripts", ".venv", "build", "dist", "runs"}


def project_packages(root: Path) -> set[str]:
    return {p.name for p in root.iterdir() if (p / "__init__.py").is_file() and p.name not in SKIP}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, name: str) -> set[str]:
    """Absolute names of everything `path` imports (relative imports resolved against `name`)."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def group_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "service" and len(parts) > 2 and parts[1] in ("api", "inference", "inputs", "workflows"):
        return ".".join(parts[:2])
    return parts[0]


def module_edges(root: Path) -> dict[str, set[str]]:
    packages = project_packages(root)
    modules = {module_name(p, root): p for pkg in packages for p in (root / pkg).rglob("*.py")}
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in sorted(modules.items()):
        for target in imported_modules(path, name):
            if target.split(".")[0] in packages and target in modules and target != name:
                edges[name].add(target)
    return edges


def package_edges(edges: dict[str, set[str]]) -> dict[tuple[str, str], set[str]]:
    grouped: dict[tuple[str, str], set[str]] = defaultdict(set)
    for source, targets in edges.items():
        for target in targets:
            if group_of(source) != group_of(target):
                grouped[(group_of(source), group_of(target))].add(f"{source} -> {target}")
    return grouped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modules", action="store_true", help="list module -> module edges")
    parser.add_argument("--dot", action="store_true", help="print the package graph in Graphviz's dot language")
    args = parser.parse_args(argv)
    edges = module_edges(ROOT)
    if args.modules:
        for source in sorted(edges):
            for target in sorted(edges[source]):
                print(f"{source} -> {target}")
        return 0
    grouped = package_edges(edges)
    if args.dot:
        print("digraph imports {")
        for (source, target), why in sorted(grouped.items()):
            print(f'  "{source}" -> "{target}" [label="{len(why)}"];')
        print("}")
        return 0
    for (source, target), why in sorted(grouped.items()):
        print(f"{source} -> {target}  ({len(why)} imports)")
        for line in sorted(why):
            print(f"    {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
