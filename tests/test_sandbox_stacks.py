"""Sandbox identity and compose templates (SPEC SBX-1)."""

from __future__ import annotations

import hashlib
import re

import pytest

from app.sandbox.identity import (
    compose_project_for,
    is_valid_sandbox_id,
    pr_sandbox_id,
    pr_sandbox_key,
    sandbox_id_for_key,
)
from app.sandbox.stacks import (
    REFUSED_STACKS,
    STACKS,
    UnsupportedTechStack,
    env_file_text,
    stack_for,
    to_yaml,
)

PORTS = {"api": 18000, "frontend": 18001, "database": 18002, "admin": 18003}


def short_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def test_a_clean_key_is_used_as_is() -> None:
    assert sandbox_id_for_key("ab") == "sandbox-ab"
    assert sandbox_id_for_key("widgets-pr7") == "sandbox-widgets-pr7"


def test_keys_that_clean_to_the_same_text_get_different_ids() -> None:
    dotted = sandbox_id_for_key("a.b")

    assert dotted == f"sandbox-ab-{short_hash('a.b')}"
    assert dotted != sandbox_id_for_key("ab")


def test_upper_case_counts_as_a_change_of_the_key() -> None:
    assert sandbox_id_for_key("Widgets") == f"sandbox-widgets-{short_hash('Widgets')}"
    assert sandbox_id_for_key("Widgets") != sandbox_id_for_key("widgets")


def test_pr_sandboxes_are_keyed_by_repository_name_without_owner() -> None:
    assert pr_sandbox_key("acme/widgets", 7) == "widgets-pr7"
    assert pr_sandbox_id("acme/widgets", 7) == "sandbox-widgets-pr7"
    assert pr_sandbox_id("other/widgets", 7) == "sandbox-widgets-pr7"
    assert compose_project_for("sandbox-widgets-pr7") == "orket-sandbox-widgets-pr7"


def test_long_keys_are_cut_to_the_column_and_stay_distinct() -> None:
    first = sandbox_id_for_key("x" * 200 + "1")
    second = sandbox_id_for_key("x" * 200 + "2")

    assert len(first) == 100
    assert first != second
    assert is_valid_sandbox_id(first)


def test_ids_never_contain_characters_outside_the_safe_set() -> None:
    made = sandbox_id_for_key("../../etc/passwd; rm -rf /")

    assert is_valid_sandbox_id(made)
    assert re.fullmatch(r"sandbox-[a-z0-9_-]+", made)
    assert not is_valid_sandbox_id("sandbox-../x")
    assert not is_valid_sandbox_id("other-id")


@pytest.mark.parametrize("name", REFUSED_STACKS + ("cobol-on-cogs",))
def test_unsupported_stacks_are_refused_with_their_name(name: str) -> None:
    with pytest.raises(UnsupportedTechStack) as refused:
        stack_for(name)

    assert refused.value.detail == f"Unsupported tech stack: {name}"


def test_the_three_stacks_are_supported() -> None:
    assert set(STACKS) == {
        "fastapi-react-postgres",
        "fastapi-vue-mongo",
        "csharp-razor-ef",
    }


@pytest.mark.parametrize("name", sorted(STACKS))
def test_templates_restart_services_and_hold_no_password(name: str) -> None:
    stack = STACKS[name]
    ports = {role: PORTS[role] for role in stack.roles}
    secrets = stack.generate_secrets()

    document = stack.compose_document(ports, "sandbox.example")
    text = to_yaml(document)

    assert "version" not in document
    assert not text.startswith("version")
    assert set(document["services"]) == set(stack.services)
    assert all(s["restart"] == "unless-stopped" for s in document["services"].values())
    for variable, value in secrets.items():
        assert value not in text
        assert "${" + variable + "}" in text
    published = {
        int(mapping.split(":")[0])
        for service in document["services"].values()
        for mapping in service.get("ports", [])
    }
    assert published == set(ports.values())


def test_fastapi_react_postgres_template() -> None:
    document = STACKS["fastapi-react-postgres"].compose_document(PORTS, "sbx.example")
    services = document["services"]

    assert services["api"]["build"] == "./src/backend"
    assert services["api"]["ports"] == ["18000:8000"]
    assert "${POSTGRES_PASSWORD}" in services["api"]["environment"]["DATABASE_URL"]
    assert services["frontend"]["build"] == "./src/frontend"
    assert services["frontend"]["ports"] == ["18001:3000"]
    assert services["frontend"]["environment"]["REACT_APP_API_URL"] == (
        "http://sbx.example:18000"
    )
    assert services["db"]["image"] == "postgres:16"
    assert services["db"]["ports"] == ["18002:5432"]
    assert services["db"]["volumes"] == ["db-data:/var/lib/postgresql/data"]
    assert services["pgadmin"]["image"] == "dpage/pgadmin4"
    assert services["pgadmin"]["ports"] == ["18003:80"]
    assert document["volumes"] == {"db-data": {}}


def test_fastapi_vue_mongo_template() -> None:
    services = STACKS["fastapi-vue-mongo"].compose_document(PORTS, "h")["services"]

    assert "${MONGO_PASSWORD}" in services["api"]["environment"]["MONGO_URL"]
    assert services["frontend"]["environment"]["VUE_APP_API_URL"] == "http://h:18000"
    assert services["mongo"]["image"] == "mongo:7"
    assert services["mongo"]["ports"] == ["18002:27017"]
    assert services["mongo"]["volumes"] == ["mongo-data:/data/db"]
    express = services["mongo-express"]
    assert express["ports"] == ["18003:8081"]
    assert express["environment"]["ME_CONFIG_BASICAUTH_PASSWORD"] == (
        "${MONGO_EXPRESS_PASSWORD}"
    )


def test_csharp_razor_ef_template_has_no_admin_tool() -> None:
    stack = STACKS["csharp-razor-ef"]
    ports = {role: PORTS[role] for role in stack.roles}

    services = stack.compose_document(ports, "h")["services"]

    assert stack.roles == ("api", "frontend", "database")
    assert services["app"]["build"] == "./src"
    assert services["app"]["ports"] == ["18000:8080", "18001:8443"]
    assert services["db"]["image"] == "mcr.microsoft.com/mssql/server:2022-latest"
    assert services["db"]["ports"] == ["18002:1433"]
    assert services["db"]["volumes"] == ["mssql-data:/var/opt/mssql"]


def test_generated_passwords_are_long_and_distinct() -> None:
    first = STACKS["fastapi-react-postgres"].generate_secrets()
    second = STACKS["fastapi-react-postgres"].generate_secrets()

    assert set(first) == {"POSTGRES_PASSWORD", "PGADMIN_PASSWORD"}
    assert all(len(value) >= 40 for value in first.values())
    assert first["POSTGRES_PASSWORD"] != second["POSTGRES_PASSWORD"]
    assert first["POSTGRES_PASSWORD"] != first["PGADMIN_PASSWORD"]


def test_env_file_lists_one_variable_per_line() -> None:
    assert env_file_text({"A": "x1", "B": "y-2"}) == "A=x1\nB=y-2\n"


def test_yaml_quotes_every_string_so_ports_stay_strings() -> None:
    text = to_yaml(
        {
            "services": {"api": {"ports": ["8000:80"], "flag": True, "count": 2}},
            "volumes": {"data": {}},
            "odd key": "yes",
        }
    )

    assert text == (
        "services:\n"
        "  api:\n"
        "    ports:\n"
        '      - "8000:80"\n'
        "    flag: true\n"
        "    count: 2\n"
        "volumes:\n"
        "  data: {}\n"
        '"odd key": "yes"\n'
    )


def test_masked_database_url_never_shows_the_password() -> None:
    stack = STACKS["fastapi-react-postgres"]

    assert stack.masked_database_url("h", 18002) == (
        "postgresql://orket:***@h:18002/app"
    )
