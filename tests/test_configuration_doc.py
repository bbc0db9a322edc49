"""docs/CONFIGURATION.md lists every setting with the default the code really has."""

import re

import pytest

from app.config import Settings
from tests.conftest import PROJECT_ROOT

DOC = PROJECT_ROOT / "docs" / "CONFIGURATION.md"
ROW = re.compile(r"^\| `(?P<name>[A-Z0-9_]+)` \| (?P<default>[^|]*) \|", re.MULTILINE)


def documented_defaults() -> dict[str, str]:
    return {m["name"]: m["default"].strip() for m in ROW.finditer(DOC.read_text())}


def variable_of(field: str) -> str:
    return str(Settings.model_fields[field].validation_alias.choices[0])  # type: ignore[union-attr]


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_every_setting_is_documented_with_its_real_default(field: str) -> None:
    variable = variable_of(field)
    rows = documented_defaults()
    assert variable in rows, f"{variable} is missing from docs/CONFIGURATION.md"

    default = Settings.model_fields[field].default
    if default is None:
        return  # no value, or one derived from other settings: described in words
    literal = re.match(r"`([^`]*)`", rows[variable])
    assert literal, (
        f"{variable}: default column should start with the value in backticks"
    )
    parsed = Settings(_env_file=None, **{variable: literal.group(1)})  # type: ignore[call-arg]
    assert getattr(parsed, field) == default


def test_documentation_names_no_setting_the_code_lacks() -> None:
    known = {variable_of(field) for field in Settings.model_fields}
    settings_section = DOC.read_text().split("## Used by the tools")[0]
    names = {m["name"] for m in ROW.finditer(settings_section)}

    assert names - known == set()
