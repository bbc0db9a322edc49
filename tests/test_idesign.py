"""iDesign path and source rules for files written by agents."""

from __future__ import annotations

import pytest

from app.engine.idesign import check_path, check_python_source, check_write


def codes(path: str) -> list[str]:
    return [message.rsplit("(Code: ", 1)[1].rstrip(")") for message in check_path(path)]


@pytest.mark.parametrize(
    "path",
    [
        "managers/notes.md",
        "README.md",
        "data.json",
        "managers/user_manager.py",
        "engines/pricing_engine.ts",
        "accessors/db_accessor.js",
        "src/services/billing.py",
        "product/models/user.tsx",
        "tests/test_user.py",
        "agent_output/calc.py",
        "./utils/strings.mjs",
    ],
)
def test_paths_that_follow_the_rules(path):
    assert check_path(path) == []


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("main.py", ["ROOT_FILE_VIOLATION"]),
        ("src/app.js", ["ROOT_FILE_VIOLATION"]),
        ("frontend/app.jsx", ["CATEGORY_VIOLATION"]),
        ("managers/user.py", ["NAMING_VIOLATION"]),
        ("engines/pricing.mjs", ["NAMING_VIOLATION"]),
        ("src/accessors/db.ts", ["NAMING_VIOLATION"]),
        ("lib/managers/user.py", ["CATEGORY_VIOLATION", "NAMING_VIOLATION"]),
    ],
)
def test_path_violation_codes(path, expected):
    assert codes(path) == expected


def test_path_violation_messages():
    assert check_path("frontend/app.jsx") == [
        "iDesign Violation: Unrecognized component category 'frontend' "
        "(Code: CATEGORY_VIOLATION)"
    ]
    assert check_path("main.py")[0].startswith("iDesign Violation: ")
    assert check_path("main.py")[0].endswith("(Code: ROOT_FILE_VIOLATION)")


def test_windows_separators_are_understood():
    assert codes("managers\\user.py") == ["NAMING_VIOLATION"]


def test_syntax_error_names_the_line():
    report = check_python_source("utils/x.py", "x = 1\ndef broken(:\n")

    assert len(report.violations) == 1
    assert report.violations[0].startswith("iDesign AST Violation: Syntax Error: ")
    assert report.violations[0].endswith("(Line: 2)")


def test_classes_in_a_manager_file_must_be_managers():
    source = "class UserManager:\n    pass\n\n\nclass Helper:\n    pass\n"

    report = check_python_source("managers/user_manager.py", source)

    assert report.violations == [
        "iDesign AST Violation: Class 'Helper' in a manager file must end with "
        "'Manager' suffix (Line: 5)"
    ]


def test_class_names_outside_layer_files_are_free():
    report = check_python_source("utils/helpers.py", "class Anything:\n    pass\n")

    assert report.ok and report.warnings == []


@pytest.mark.parametrize(
    ("path", "source"),
    [
        ("accessors/db_accessor.py", "from managers.user_manager import UserManager"),
        ("accessors/db_accessor.py", "import engines.pricing_engine"),
        ("accessors/db_accessor.py", "from src.engines import pricing_engine"),
        ("accessors/db_accessor.py", "from ..managers import user_manager"),
        ("accessors/db_accessor.py", "from . import engine_core"),
        ("engines/pricing_engine.py", "from managers import user_manager"),
    ],
)
def test_lower_layers_may_not_import_upper_layers(path, source):
    report = check_python_source(path, source + "\n")

    assert len(report.violations) == 1
    assert "Layer Violation" in report.violations[0]
    assert report.violations[0].endswith("(Line: 1)")


@pytest.mark.parametrize(
    ("path", "source"),
    [
        ("accessors/db_accessor.py", "from sqlalchemy.engine import Engine"),
        ("accessors/db_accessor.py", "import sqlalchemy.engine"),
        ("accessors/db_accessor.py", "from utils import engine_helpers as h"),
        ("engines/pricing_engine.py", "from accessors.db_accessor import Db"),
        ("engines/pricing_engine.py", "from engines.tax_engine import TaxEngine"),
        ("managers/user_manager.py", "from engines.pricing_engine import Pricing"),
        ("services/users.py", "from managers.user_manager import UserManager"),
    ],
)
def test_allowed_imports_including_third_party_engine_modules(path, source):
    assert check_python_source(path, source + "\n").violations == []


def test_more_than_fifteen_methods_is_only_a_warning():
    methods = "".join(f"    def m{n}(self):\n        pass\n" for n in range(16))
    source = f"class BigManager:\n{methods}"

    report = check_python_source("managers/big_manager.py", source)

    assert report.ok
    assert len(report.warnings) == 1
    assert "16 methods" in report.warnings[0]


def test_fifteen_methods_is_fine():
    methods = "".join(f"    def m{n}(self):\n        pass\n" for n in range(15))

    assert check_python_source("utils/u.py", f"class U:\n{methods}").warnings == []


def test_check_write_combines_path_and_source_rules():
    report = check_write("managers/user.py", "def broken(:\n")

    assert len(report.violations) == 2
    assert report.violations[0].endswith("(Code: NAMING_VIOLATION)")
    assert report.violations[1].startswith("iDesign AST Violation: Syntax Error")


def test_check_write_skips_source_rules_for_other_languages_and_text():
    assert check_write("engines/view_engine.ts", "class View {}").ok
    assert check_write("managers/notes.md", "class Broken(:").ok
