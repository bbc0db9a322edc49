"""`POST /v1/system/chat-driver` (API-13), with scripted models."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from app.api.driver import driver_messages
from app.engine.assets import AssetStore
from app.models.runtime import Event
from tests.api_support import scripted_environment, write_asset
from tests.conftest import ORKET_MODEL_TREE

NEW_EPIC = {"name": "Billing", "team": "demo_team", "environment": "demo", "issues": []}


def plan_reply(plan: dict) -> str:
    return "Here is the plan.\n```json\n" + json.dumps(plan) + "\n```\nDone."


@pytest.fixture
def driver_app(settings_factory):
    """An app whose driver environment is `driver`, scripted per test."""
    from app import create_app

    apps = []

    def build(replies=None, **settings):
        values = {"driver_environment": "driver", **settings}
        flask_app = create_app(settings_factory(**values))
        config = flask_app.extensions["orket"].settings.config_path
        if replies is not None:
            scripted_environment(config, "driver", replies)
        apps.append(flask_app)
        return flask_app

    yield build
    for flask_app in apps:
        flask_app.extensions["orket"].stop()


def ask(flask_app, headers, message="Plan the billing epic"):
    return flask_app.test_client().post(
        "/v1/system/chat-driver", json={"message": message}, headers=headers
    )


def test_create_epic_writes_a_new_asset_under_the_config_dir(driver_app, auth_headers):
    flask_app = driver_app(
        {
            "DRIVER": [
                plan_reply(
                    {"action": "create_epic", "name": "Billing v2!", "asset": NEW_EPIC}
                )
            ]
        }
    )
    config = flask_app.extensions["orket"].settings.config_path

    response = ask(flask_app, auth_headers)

    assert response.status_code == 200
    assert response.get_json() == {
        "response": "Created epics/billing_v2.json in the config directory."
    }
    assert json.loads((config / "epics" / "billing_v2.json").read_text()) == NEW_EPIC
    assert (
        AssetStore(flask_app.extensions["orket"].settings).load_epic("billing_v2").name
        == "Billing"
    )


@pytest.mark.parametrize(
    "action, category", [("create_rock", "rocks"), ("create_issue", "issues")]
)
def test_create_rock_and_issue(driver_app, auth_headers, action, category):
    flask_app = driver_app(
        {"DRIVER": [plan_reply({"action": action, "name": "thing", "asset": {"x": 1}})]}
    )
    config = flask_app.extensions["orket"].settings.config_path

    assert ask(flask_app, auth_headers).status_code == 200

    assert json.loads((config / category / "thing.json").read_text()) == {"x": 1}


def test_an_existing_asset_is_never_overwritten(driver_app, auth_headers):
    flask_app = driver_app(
        {
            "DRIVER": [
                plan_reply(
                    {"action": "create_epic", "name": "billing", "asset": NEW_EPIC}
                )
            ]
        }
    )
    config = flask_app.extensions["orket"].settings.config_path
    existing = write_asset(config, "epics/billing.json", {"keep": True})

    response = ask(flask_app, auth_headers)

    assert response.status_code == 200
    assert "already exists" in response.get_json()["response"]
    assert json.loads(existing.read_text()) == {"keep": True}
    assert sorted(p.name for p in existing.parent.iterdir()) == ["billing.json"]


@pytest.mark.parametrize(
    "given, stored",
    [
        ("../../etc/passwd", "etc_passwd"),
        ("Ünïcode Name", "n_code_name"),
        ("x" * 80, "x" * 64),
    ],
)
def test_names_are_sanitised(driver_app, auth_headers, given, stored):
    flask_app = driver_app(
        {
            "DRIVER": [
                plan_reply({"action": "create_epic", "name": given, "asset": NEW_EPIC})
            ]
        }
    )
    config = flask_app.extensions["orket"].settings.config_path

    ask(flask_app, auth_headers)

    assert (config / "epics" / f"{stored}.json").is_file()
    assert [p.name for p in (config / "epics").iterdir()] == [f"{stored}.json"]


def test_a_create_plan_without_a_usable_name_writes_nothing(driver_app, auth_headers):
    flask_app = driver_app(
        {"DRIVER": [plan_reply({"action": "create_epic", "name": "!!!", "asset": {}})]}
    )

    response = ask(flask_app, auth_headers)

    assert "no usable name" in response.get_json()["response"]
    assert not (flask_app.extensions["orket"].settings.config_path / "epics").exists()


def test_text_actions_answer_with_text(driver_app, auth_headers):
    flask_app = driver_app(
        {
            "DRIVER": [
                plan_reply(
                    {
                        "action": "assign_team",
                        "team": "standard",
                        "response": "Give it to standard.",
                    }
                )
            ]
        }
    )

    assert ask(flask_app, auth_headers).get_json() == {
        "response": "Give it to standard."
    }


def test_a_reply_without_a_plan_is_explained(driver_app, auth_headers):
    flask_app = driver_app({"DRIVER": ["I am not sure what you mean."]})

    response = ask(flask_app, auth_headers)

    assert response.status_code == 200
    text = response.get_json()["response"]
    assert "without a plan" in text and "I am not sure what you mean." in text


def test_the_driver_key_of_the_script_is_used(driver_app, auth_headers):
    flask_app = driver_app(
        {
            "*": ["wrong key"],
            "DRIVER": [
                plan_reply({"action": "turn_directive", "response": "right key"})
            ],
        }
    )

    assert ask(flask_app, auth_headers).get_json() == {"response": "right key"}


def test_the_call_is_recorded_as_model_usage(driver_app, auth_headers, runtime_db):
    flask_app = driver_app({"DRIVER": ["no plan"]})

    ask(flask_app, auth_headers)

    with runtime_db.reader() as session:
        row = session.scalars(select(Event).where(Event.event == "model_usage")).one()
    assert row.role == "operations_lead"
    assert json.loads(row.data)["provider"] == "scripted"


def test_a_provider_failure_is_502(driver_app, auth_headers):
    flask_app = driver_app()
    config = flask_app.extensions["orket"].settings.config_path
    write_asset(
        config,
        "environments/driver.json",
        {"provider": "scripted", "model": "scripted:driver"},
    )
    write_asset(
        config,
        "scripts/driver.json",
        {
            "schema": "orket-script/1",
            "on_exhausted": "error",
            "replies": {"DRIVER": []},
        },
    )

    response = ask(flask_app, auth_headers)

    assert response.status_code == 502
    assert response.get_json() == {"detail": "Model provider unavailable"}


def test_an_unreachable_model_server_is_502(driver_app, auth_headers):
    flask_app = driver_app(ollama_host="http://127.0.0.1:9")
    config = flask_app.extensions["orket"].settings.config_path
    write_asset(
        config,
        "environments/driver.json",
        {"provider": "ollama", "model": "llama3.1:8b", "timeout": 2},
    )

    response = ask(flask_app, auth_headers)

    assert response.status_code == 502
    assert response.get_json() == {"detail": "Model provider unavailable"}


def test_a_missing_driver_environment_is_502(driver_app, auth_headers):
    response = ask(driver_app(), auth_headers)

    assert response.status_code == 502


def test_the_deadline_is_504(driver_app, auth_headers):
    flask_app = driver_app(chat_driver_timeout_sec=0.2)
    config = flask_app.extensions["orket"].settings.config_path
    write_asset(
        config,
        "environments/driver.json",
        {"provider": "scripted", "model": "scripted:driver"},
    )
    write_asset(
        config,
        "scripts/driver.json",
        {"schema": "orket-script/1", "delay_ms": 3000, "replies": {"DRIVER": ["late"]}},
    )

    response = ask(flask_app, auth_headers)

    assert response.status_code == 504
    assert response.get_json() == {"detail": "Model timed out"}


@pytest.mark.parametrize("body", [{}, {"message": ""}, {"message": 5}])
def test_the_message_is_required(client, auth_headers, body):
    response = client.post("/v1/system/chat-driver", json=body, headers=auth_headers)

    assert response.status_code == 422
    assert response.get_json()["detail"][0]["loc"] == ["body", "message"]


def test_the_prompt_carries_the_inventory_and_the_message(settings_factory):
    settings = settings_factory(model_dir=ORKET_MODEL_TREE / "model")

    system, user = driver_messages(AssetStore(settings), "What next?")

    assert user == {"role": "user", "content": "What next?"}
    for name in (
        "creative",
        "engineering",
        "standard",
        "core_launch",
        "void_lore",
        "demo",
    ):
        assert name in system["content"]
    assert "create_epic" in system["content"]
