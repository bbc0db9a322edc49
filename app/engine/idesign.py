"""iDesign structure rules for files an agent writes, used by the tool gate when an
epic turns `architecture_governance.idesign` on.

Two kinds of check. Path rules look only at where a code file goes: not at the
project root, under a recognised component category, and named for its layer inside
`managers/`, `engines/` and `accessors/`. Python rules read the source: it must
parse, classes in manager/engine/accessor files carry the layer's name, and the layers
import only downwards (managers → engines → accessors). Non-code files are never
checked, so notes and data can live anywhere.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import PurePosixPath

CODE_SUFFIXES = frozenset({".py", ".ts", ".tsx", ".js", ".jsx", ".mjs"})
CATEGORIES = frozenset(
    {
        "managers",
        "engines",
        "accessors",
        "utils",
        "controllers",
        "tests",
        "schemas",
        "models",
        "infrastructure",
        "services",
        "agent_output",
    }
)
# Leading path (and import) components that hold a project rather than a layer.
PROJECT_ROOTS = frozenset({"src", "product"})
LAYER_DIRECTORIES = {
    "managers": "manager",
    "engines": "engine",
    "accessors": "accessor",
}
LAYER_WORDS = ("manager", "engine", "accessor")
# Which layers each layer may not import from.
FORBIDDEN_IMPORTS = {"accessor": ("manager", "engine"), "engine": ("manager",)}
MAX_METHODS = 15


@dataclass
class IDesignReport:
    """Violations block the write; warnings are advice only."""

    violations: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


def check_write(path: str, content: str) -> IDesignReport:
    """Every rule for writing `content` to the workspace-relative `path`."""
    report = IDesignReport(violations=check_path(path))
    if _suffix(path) == ".py":
        source_report = check_python_source(path, content)
        report.violations.extend(source_report.violations)
        report.warnings.extend(source_report.warnings)
    return report


def check_path(path: str) -> list[str]:
    """Path rule violations for a workspace-relative file path."""
    parts = _parts(path)
    if not parts or _suffix(path) not in CODE_SUFFIXES:
        return []
    if len(parts) == 1:
        return [
            _violation(f"Code file '{parts[0]}' is at the root", "ROOT_FILE_VIOLATION")
        ]

    problems = []
    inner = _strip_project_roots(parts)
    if len(inner) == 1:
        problems.append(
            _violation(
                f"Code file '{inner[0]}' has no component category",
                "ROOT_FILE_VIOLATION",
            )
        )
    elif inner[0].lower() not in CATEGORIES:
        problems.append(
            _violation(
                f"Unrecognized component category '{inner[0]}'", "CATEGORY_VIOLATION"
            )
        )
    problems.extend(_naming_violations(parts))
    return problems


def check_python_source(path: str, source: str) -> IDesignReport:
    """Syntax, class naming, layer imports and class size of one Python file."""
    report = IDesignReport()
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as exc:
        report.violations.append(_ast_violation(f"Syntax Error: {exc.msg}", exc.lineno))
        return report

    layer = _layer_of(PurePosixPath(path.replace("\\", "/")).stem)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            _check_class(node, layer, report)
        elif layer and isinstance(node, ast.Import | ast.ImportFrom):
            _check_import(node, layer, report)
    return report


def _check_class(node: ast.ClassDef, layer: str | None, report: IDesignReport) -> None:
    if layer and layer not in node.name.lower():
        suffix = layer.capitalize()
        report.violations.append(
            _ast_violation(
                f"Class '{node.name}' in a {layer} file must end with "
                f"'{suffix}' suffix",
                node.lineno,
            )
        )
    methods = sum(
        isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) for item in node.body
    )
    if methods > MAX_METHODS:
        report.warnings.append(
            f"iDesign AST Warning: Class '{node.name}' has {methods} methods, more "
            f"than {MAX_METHODS}; consider splitting it (Line: {node.lineno})"
        )


def _check_import(
    node: ast.Import | ast.ImportFrom, layer: str, report: IDesignReport
) -> None:
    forbidden = FORBIDDEN_IMPORTS.get(layer, ())
    for target in _imported_components(node):
        word = next((w for w in forbidden if target.lower().startswith(w)), None)
        if word:
            report.violations.append(
                _ast_violation(
                    f"Layer Violation: a {layer} may not import from the {word} "
                    f"layer ('{target}')",
                    node.lineno,
                )
            )


def _imported_components(node: ast.Import | ast.ImportFrom) -> list[str]:
    """The component of each import that names a layer of this project.

    That is the first component after any project root (`src`, `product`), or for a
    relative import without a module, the imported names. Deeper components belong
    to other packages: `sqlalchemy.engine` is not this project's engine layer.
    """
    if isinstance(node, ast.Import):
        modules = [alias.name for alias in node.names]
    elif node.module:
        modules = [node.module]
    elif node.level:
        return [alias.name for alias in node.names]
    else:
        return []
    components = []
    for module in modules:
        inner = _strip_project_roots(module.split("."))
        if inner:
            components.append(inner[0])
    return components


def _naming_violations(parts: list[str]) -> list[str]:
    file_name = parts[-1]
    problems = []
    for directory in parts[:-1]:
        word = LAYER_DIRECTORIES.get(directory.lower())
        if word and word not in file_name.lower():
            problems.append(
                _violation(
                    f"Files in '{directory}/' must have '{word}' in their name "
                    f"('{file_name}')",
                    "NAMING_VIOLATION",
                )
            )
    return problems


def _layer_of(stem: str) -> str | None:
    """The layer a file name claims; the word nearest the end wins."""
    lowered = stem.lower()
    found = [(lowered.rfind(word), word) for word in LAYER_WORDS if word in lowered]
    return max(found)[1] if found else None


def _parts(path: str) -> list[str]:
    normalised = path.replace("\\", "/")
    return [part for part in PurePosixPath(normalised).parts if part not in ("/", ".")]


def _suffix(path: str) -> str:
    return PurePosixPath(path.replace("\\", "/")).suffix.lower()


def _strip_project_roots(parts: list[str]) -> list[str]:
    index = 0
    while index < len(parts) - 1 and parts[index].lower() in PROJECT_ROOTS:
        index += 1
    return parts[index:]


def _violation(message: str, code: str) -> str:
    return f"iDesign Violation: {message} (Code: {code})"


def _ast_violation(message: str, line: int | None) -> str:
    return f"iDesign AST Violation: {message} (Line: {line or 0})"
