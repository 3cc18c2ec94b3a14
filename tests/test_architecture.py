"""The allowed import arrows of docs/architecture.md: no file imports another module's
private names; the kernel (foundation) and core files never import a module, but for the
composition roots that assemble the app."""

from __future__ import annotations

import ast
from pathlib import Path

import crm

ROOT = Path(crm.__file__).parent
# The kernel: the foundation, and billing's plan gate (permissions and the rate limits ask it;
# an organization must always be able to pay, so billing is never switched off).
KERNEL = {"foundation", "billing"}
# Core files that assemble the app: they register every module, and nothing else.
COMPOSITION_ROOTS = {"__init__.py", "__main__.py", "cli.py", "worker.py", "api/__init__.py"}


def unit(path: Path) -> str:
    """The module a file belongs to (customers, whatsapp, foundation...), or the core file itself:
    what may share private names."""
    relative = path.relative_to(ROOT)
    if len(relative.parts) > 1 and relative.parts[0] != "api":
        return relative.parts[0]
    return "core:" + relative.as_posix()


def modules() -> set[str]:
    return {path.name for path in ROOT.iterdir()
            if (path / "__init__.py").exists() and path.name != "api" and path.name not in KERNEL}


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """Each `from crm... import names` and `import crm...` of the file: module, names, line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.split(".")[0] == "crm":
            found.append((node.module, [alias.name for alias in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names
                      if alias.name.split(".")[0] == "crm"]
    return found


def target(module: str, name: str | None = None) -> Path:
    """The file an import reads from (a name may be a submodule of a package)."""
    base = ROOT.joinpath(*module.split(".")[1:])
    for candidate in ((base / name).with_suffix(".py") if name else None,
                      base / name / "__init__.py" if name else None,
                      base.with_suffix(".py"), base / "__init__.py"):
        if candidate is not None and candidate.exists():
            return candidate
    raise AssertionError(f"no file for {module} {name}")


def files() -> list[Path]:
    return sorted(ROOT.rglob("*.py"))


def test_no_file_imports_another_modules_private_names():
    """What two modules share is public, or belongs in core (the page and API kits)."""
    crossings = []
    for path in files():
        for module, names, line in imports(path):
            for name in names:
                private = name.startswith("_") and not name.startswith("__")
                if private and unit(target(module, name)) != unit(path):
                    crossings.append(f"{path.relative_to(ROOT)}:{line} {module}.{name}")
    assert crossings == []


def test_the_kernel_and_core_import_no_module():
    """The kernel stands with every module switched off; core serves them all. Only the
    composition roots name modules, to register them."""
    arrows = []
    for path in files():
        relative = path.relative_to(ROOT).as_posix()
        importer = unit(path)
        if relative in COMPOSITION_ROOTS or importer in modules():
            continue
        for module, _names, line in imports(path):
            if module.split(".")[1:2] and module.split(".")[1] in modules():
                arrows.append(f"{relative}:{line} imports {module}")
    assert arrows == []
