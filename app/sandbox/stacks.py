"""The compose templates of the supported tech stacks (SPEC SBX-1).

A template never holds a password: services refer to `${VAR}`, and the values are
generated per sandbox into a `.env` file (mode 0600) next to the compose file,
which Compose reads from the project directory. The compose file is written as
block YAML whose strings are all double-quoted JSON strings, a form every YAML
parser reads the same way (no `yes`/`no` or `80:80` surprises).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

PORT_ROLES = ("api", "frontend", "database", "admin")
REFUSED_STACKS = ("node-react-postgres", "django-react-postgres")
RESTART = "unless-stopped"
MASK = "***"

Ports = dict[str, int]
ComposeBuilder = Callable[[Ports, str], dict[str, Any]]


class UnsupportedTechStack(Exception):
    def __init__(self, name: str) -> None:
        self.detail = f"Unsupported tech stack: {name}"
        super().__init__(self.detail)


@dataclass(frozen=True)
class Stack:
    """One supported stack: its ports, services, secrets and compose document."""

    name: str
    roles: tuple[str, ...]
    services: tuple[str, ...]
    secret_names: tuple[str, ...]
    database_password: str
    database_url: str  # with {password}, {host} and {port}
    compose: ComposeBuilder

    def compose_document(self, ports: Ports, public_host: str) -> dict[str, Any]:
        return self.compose(ports, public_host)

    def generate_secrets(self) -> dict[str, str]:
        return {name: _password(name) for name in self.secret_names}

    def masked_database_url(self, host: str, port: int) -> str:
        return self.database_url.format(password=MASK, host=host, port=port)


def _password(name: str) -> str:
    value = secrets.token_urlsafe(32)
    # SQL Server refuses an SA password without three of its four character classes.
    while name == "MSSQL_SA_PASSWORD" and not _mssql_complex(value):
        value = secrets.token_urlsafe(32)
    return value


def _mssql_complex(value: str) -> bool:
    classes = (r"[a-z]", r"[A-Z]", r"[0-9]", r"[^A-Za-z0-9]")
    return sum(bool(re.search(pattern, value)) for pattern in classes) >= 3


def _url(host: str, port: int) -> str:
    return f"http://{host}:{port}"


def _service(**fields: Any) -> dict[str, Any]:
    return {**fields, "restart": RESTART}


def _fastapi_react_postgres(ports: Ports, host: str) -> dict[str, Any]:
    return {
        "services": {
            "api": _service(
                build="./src/backend",
                environment={
                    "DATABASE_URL": "postgresql://orket:${POSTGRES_PASSWORD}@db:5432/app"
                },
                ports=[f"{ports['api']}:8000"],
                depends_on=["db"],
            ),
            "frontend": _service(
                build="./src/frontend",
                environment={"REACT_APP_API_URL": _url(host, ports["api"])},
                ports=[f"{ports['frontend']}:3000"],
                depends_on=["api"],
            ),
            "db": _service(
                image="postgres:16",
                environment={
                    "POSTGRES_USER": "orket",
                    "POSTGRES_PASSWORD": "${POSTGRES_PASSWORD}",
                    "POSTGRES_DB": "app",
                },
                ports=[f"{ports['database']}:5432"],
                volumes=["db-data:/var/lib/postgresql/data"],
            ),
            "pgadmin": _service(
                image="dpage/pgadmin4",
                environment={
                    "PGADMIN_DEFAULT_EMAIL": "admin@orket.dev",
                    "PGADMIN_DEFAULT_PASSWORD": "${PGADMIN_PASSWORD}",
                },
                ports=[f"{ports['admin']}:80"],
                depends_on=["db"],
            ),
        },
        "volumes": {"db-data": {}},
    }


def _fastapi_vue_mongo(ports: Ports, host: str) -> dict[str, Any]:
    mongo_url = "mongodb://orket:${MONGO_PASSWORD}@mongo:27017"
    return {
        "services": {
            "api": _service(
                build="./src/backend",
                environment={"MONGO_URL": f"{mongo_url}/app?authSource=admin"},
                ports=[f"{ports['api']}:8000"],
                depends_on=["mongo"],
            ),
            # The Vue CLI development server listens on 8080.
            "frontend": _service(
                build="./src/frontend",
                environment={"VUE_APP_API_URL": _url(host, ports["api"])},
                ports=[f"{ports['frontend']}:8080"],
                depends_on=["api"],
            ),
            "mongo": _service(
                image="mongo:7",
                environment={
                    "MONGO_INITDB_ROOT_USERNAME": "orket",
                    "MONGO_INITDB_ROOT_PASSWORD": "${MONGO_PASSWORD}",
                },
                ports=[f"{ports['database']}:27017"],
                volumes=["mongo-data:/data/db"],
            ),
            "mongo-express": _service(
                image="mongo-express",
                environment={
                    "ME_CONFIG_MONGODB_URL": f"{mongo_url}/?authSource=admin",
                    "ME_CONFIG_BASICAUTH": "true",
                    "ME_CONFIG_BASICAUTH_USERNAME": "admin",
                    "ME_CONFIG_BASICAUTH_PASSWORD": "${MONGO_EXPRESS_PASSWORD}",
                },
                ports=[f"{ports['admin']}:8081"],
                depends_on=["mongo"],
            ),
        },
        "volumes": {"mongo-data": {}},
    }


def _csharp_razor_ef(ports: Ports, host: str) -> dict[str, Any]:
    connection = (
        "Server=db,1433;Database=app;User Id=sa;"
        "Password=${MSSQL_SA_PASSWORD};TrustServerCertificate=True"
    )
    return {
        "services": {
            "app": _service(
                build="./src",
                environment={"ConnectionStrings__DefaultConnection": connection},
                ports=[f"{ports['api']}:8080", f"{ports['frontend']}:8443"],
                depends_on=["db"],
            ),
            "db": _service(
                image="mcr.microsoft.com/mssql/server:2022-latest",
                environment={
                    "ACCEPT_EULA": "Y",
                    "MSSQL_SA_PASSWORD": "${MSSQL_SA_PASSWORD}",
                },
                ports=[f"{ports['database']}:1433"],
                volumes=["mssql-data:/var/opt/mssql"],
            ),
        },
        "volumes": {"mssql-data": {}},
    }


STACKS: dict[str, Stack] = {
    stack.name: stack
    for stack in (
        Stack(
            name="fastapi-react-postgres",
            roles=PORT_ROLES,
            services=("api", "frontend", "db", "pgadmin"),
            secret_names=("POSTGRES_PASSWORD", "PGADMIN_PASSWORD"),
            database_password="POSTGRES_PASSWORD",
            database_url="postgresql://orket:{password}@{host}:{port}/app",
            compose=_fastapi_react_postgres,
        ),
        Stack(
            name="fastapi-vue-mongo",
            roles=PORT_ROLES,
            services=("api", "frontend", "mongo", "mongo-express"),
            secret_names=("MONGO_PASSWORD", "MONGO_EXPRESS_PASSWORD"),
            database_password="MONGO_PASSWORD",
            database_url="mongodb://orket:{password}@{host}:{port}/app?authSource=admin",
            compose=_fastapi_vue_mongo,
        ),
        Stack(
            name="csharp-razor-ef",
            roles=("api", "frontend", "database"),
            services=("app", "db"),
            secret_names=("MSSQL_SA_PASSWORD",),
            database_password="MSSQL_SA_PASSWORD",
            database_url="mssql://sa:{password}@{host}:{port}/app",
            compose=_csharp_razor_ef,
        ),
    )
}


def stack_for(name: str) -> Stack:
    """The stack called `name`; anything else is refused with SBX-1's message."""
    stack = STACKS.get(name)
    if stack is None:
        raise UnsupportedTechStack(name)
    return stack


def env_file_text(values: dict[str, str]) -> str:
    # token_urlsafe values need no quoting in dotenv syntax.
    return "".join(f"{name}={value}\n" for name, value in values.items())


def to_yaml(document: dict[str, Any]) -> str:
    """Block YAML of a mapping of mappings, lists, strings, numbers and booleans."""
    return "\n".join(_yaml_lines(document, 0)) + "\n"


def _yaml_lines(value: Any, indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if _is_empty_collection(item) or not isinstance(item, dict | list):
                lines.append(f"{pad}{_yaml_key(key)}: {_yaml_scalar(item)}")
            else:
                lines.append(f"{pad}{_yaml_key(key)}:")
                lines.extend(_yaml_lines(item, indent + 2))
    else:
        for item in value:
            lines.append(f"{pad}- {_yaml_scalar(item)}")
    return lines


def _is_empty_collection(value: Any) -> bool:
    return isinstance(value, dict | list) and not value


def _yaml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", key) else json.dumps(key)


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return json.dumps(str(value), ensure_ascii=False)
