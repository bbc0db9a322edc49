"""Asset loading: tier order, leniency towards real Orket trees, the packaged demo."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from app.config import Settings
from app.engine.assets import (
    CATEGORIES,
    PACKAGED_ROOT,
    AssetError,
    AssetNotFoundError,
    AssetStore,
    derived_issue_id,
    normalize_priority,
)
from tests.conftest import ORKET_MODEL_TREE

REAL_TREE = ORKET_MODEL_TREE
REAL_CONFIG = REAL_TREE / "config"
REAL_MODEL = REAL_TREE / "model"
BROKEN_REAL_DIALECTS = {"generic", "llama3", "phi"}


def write_json(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def store_for(tmp_path: Path, config: Path, model: Path, **kwargs) -> AssetStore:
    settings = Settings(
        config_dir=config, model_dir=model, data_dir=tmp_path / "data", **kwargs
    )
    return AssetStore(settings)


@pytest.fixture
def real_store(tmp_path: Path) -> AssetStore:
    return store_for(tmp_path, REAL_CONFIG, REAL_MODEL)


@pytest.fixture
def empty_store(tmp_path: Path) -> AssetStore:
    """No config and no model tree: only packaged defaults are visible."""
    return store_for(tmp_path, tmp_path / "config", tmp_path / "model")


def epic(name: str, **extra: object) -> dict:
    return {"name": name, "team": "t", "environment": "e", **extra}


# Tier order --------------------------------------------------------------------------


@pytest.fixture
def tiered(tmp_path: Path) -> tuple[AssetStore, dict[str, Path]]:
    """The epic `x` in all four tiers, each with its tier as the name."""
    roots = {
        "config": tmp_path / "config" / "epics",
        "department": tmp_path / "model" / "sales" / "epics",
        "core": tmp_path / "model" / "core" / "epics",
        "packaged": tmp_path / "packaged" / "core" / "epics",
    }
    files = {
        tier: write_json(root / "x.json", epic(tier)) for tier, root in roots.items()
    }
    settings = Settings(
        config_dir=tmp_path / "config",
        model_dir=tmp_path / "model",
        data_dir=tmp_path / "data",
    )
    return AssetStore(settings, packaged_root=tmp_path / "packaged"), files


@pytest.mark.parametrize(
    ("removed", "expected"),
    [
        ((), "config"),
        (("config",), "department"),
        (("config", "department"), "core"),
        (("config", "department", "core"), "packaged"),
    ],
)
def test_first_tier_holding_the_asset_wins(tiered, removed, expected):
    store, files = tiered
    for tier in removed:
        files[tier].unlink()

    loaded = store.load_epic("x", "sales")

    assert loaded.name == expected
    assert loaded.origin.tier == expected


def test_core_department_skips_other_departments(tiered):
    store, files = tiered
    files["config"].unlink()

    assert store.load_epic("x").name == "core"


def test_list_assets_is_the_sorted_union_of_every_tier(tiered, tmp_path):
    store, _ = tiered
    write_json(tmp_path / "config" / "epics" / "zeta.json", epic("z"))
    write_json(tmp_path / "model" / "sales" / "epics" / "beta.json", epic("b"))
    write_json(tmp_path / "model" / "other" / "epics" / "hidden.json", epic("h"))
    write_json(tmp_path / "packaged" / "core" / "epics" / "alpha.json", epic("a"))

    assert store.list_assets("epics", "sales") == ["alpha", "beta", "x", "zeta"]
    assert store.department_assets("epics", "sales") == ["beta", "x"]


def test_role_file_beats_inline_team_role_which_beats_packaged(tmp_path):
    packaged = tmp_path / "packaged"
    write_json(packaged / "core" / "roles" / "coder.json", {"description": "packaged"})
    write_json(packaged / "core" / "roles" / "tester.json", {"description": "packaged"})
    model = tmp_path / "model"
    write_json(model / "core" / "roles" / "coder.json", {"description": "file"})
    write_json(
        model / "core" / "teams" / "crew.json",
        {
            "seats": {"dev": {"name": "Dev", "roles": ["coder", "tester"]}},
            "roles": {
                "coder": {"description": "inline coder"},
                "tester": {"description": "inline tester"},
            },
        },
    )
    settings = Settings(config_dir=tmp_path / "c", model_dir=model, data_dir=tmp_path)
    store = AssetStore(settings, packaged_root=packaged)
    team = store.load_team("crew")

    assert store.load_role("coder", team).description == "file"
    assert store.load_role("tester", team).description == "inline tester"
    assert store.load_role("tester").description == "packaged"
    with pytest.raises(AssetNotFoundError):
        store.load_role("architect", team)


@pytest.mark.parametrize("name", ["../core/epics/demo", "..", ".hidden", "a/b", ""])
def test_names_that_could_escape_the_tree_are_not_found(empty_store, name):
    with pytest.raises(AssetNotFoundError):
        empty_store.load_epic(name)


# The real Orket tree ---------------------------------------------------------------


def real_category_files() -> list[Path]:
    return sorted(
        path
        for department in REAL_MODEL.iterdir()
        if department.is_dir()
        for category in CATEGORIES
        for path in (department / category).glob("*.json")
    )


def test_every_file_of_the_real_tree_loads_or_is_reported(real_store):
    report = real_store.check()

    checked = {Path(item.path) for item in report.files}
    assert set(real_category_files()) <= checked
    assert REAL_CONFIG / "organization.json" in checked
    assert report.errors == []
    assert all("unexpected" not in (item.error or "") for item in report.files)
    repaired = {
        Path(item.path).stem
        for item in report.files
        if any("unescaped quotes" in w.message for w in item.warnings)
    }
    assert repaired == BROKEN_REAL_DIALECTS
    assert report.ok


def test_real_dialects_with_a_raw_json_example_are_read_with_a_warning(real_store):
    llama3 = real_store.load_dialect("llama3")

    assert llama3.model_family == "llama3"
    assert llama3.dsl_format.startswith('{\n  "tool": "write_file",\n  "args": {')
    assert llama3.dsl_format.endswith("\n}")
    assert len(llama3.constraints) == 4
    assert any("unescaped quotes" in w.message for w in llama3.warnings)


def test_json_that_no_reading_repairs_is_invalid(tmp_path):
    config = tmp_path / "config"
    (config / "dialects").mkdir(parents=True)
    raw = '{"model_family": "x",\n  "dsl_format": "{\n  "a": 1,\n  broken\n'
    (config / "dialects" / "llama3.json").write_text(raw, encoding="utf-8")
    store = store_for(tmp_path, config, tmp_path / "model")

    with pytest.raises(AssetError) as caught:
        store.load_dialect("llama3")

    message = caught.value.message
    assert message.startswith("Asset llama3 is invalid: invalid JSON at line")
    assert "raw control characters inside strings from line 2" in message


def test_raw_line_breaks_inside_strings_are_read_with_a_warning(tmp_path):
    config = tmp_path / "config"
    (config / "dialects").mkdir(parents=True)
    raw = '{"model_family": "llama3", "dsl_format": "line one\nline two"}'
    (config / "dialects" / "llama3.json").write_text(raw, encoding="utf-8")
    store = store_for(tmp_path, config, tmp_path / "model")

    dialect = store.load_dialect("llama3")

    assert dialect.dsl_format == "line one\nline two"
    assert [w.level for w in dialect.warnings] == ["warning"]
    assert "raw control characters" in dialect.warnings[0].message
    assert dialect.warnings[0].asset == "dialects/llama3"


def test_well_formed_real_dialect_loads_without_warnings(real_store):
    qwen = real_store.load_dialect("qwen")

    assert qwen.model_family == "qwen"
    assert '"tool": "write_file"' in qwen.dsl_format
    assert qwen.warnings == ()


def test_model_without_a_usable_dialect_gets_packaged_generic(tmp_path):
    config = tmp_path / "config"
    (config / "dialects").mkdir(parents=True)
    (config / "dialects" / "llama3.json").write_text("{not json", encoding="utf-8")
    store = store_for(tmp_path, config, tmp_path / "model")

    dialect = store.dialect_for_model("llama3.1:8b")

    assert dialect.origin.tier == "packaged"
    assert dialect.name == "generic"
    assert "Asset llama3 is invalid" in dialect.warnings[-1].message


def test_real_tree_dialects_are_used_for_their_models(real_store):
    assert real_store.dialect_for_model("llama3.1:8b").origin.tier == "core"
    assert real_store.dialect_for_model("qwen2.5-coder:7b").origin.tier == "core"


def test_rock_status_that_is_not_a_card_status_is_only_informational(real_store):
    rock = real_store.load_rock("run_the_business")

    assert rock.status == "active"
    assert [(w.level, "active" in w.message) for w in rock.warnings] == [("info", True)]
    assert rock.epics[-1].epic == "import_best_practices"
    assert rock.epics[-1].department == "training"


def test_tracs_list_is_warned_and_not_read_as_issues(real_store):
    loaded = real_store.load_epic("void_lore", "creative")

    assert loaded.issues == ()
    assert any("'tracs'" in w.message for w in loaded.warnings)


def test_inline_team_roles_fill_in_for_missing_role_files(real_store):
    team = real_store.load_team("standard")

    architect = real_store.load_role("architect", team)
    coder = real_store.load_role("coder", team)

    assert architect.origin.tier == "team"
    assert architect.tools == (
        "read_file",
        "list_directory",
        "add_issue_comment",
        "get_issue_context",
        "update_issue_status",
    )
    assert coder.origin.path == REAL_MODEL / "core" / "roles" / "coder.json"
    assert team.find_seat("Senior Developer").key == "senior_developer"


def test_unknown_tools_are_dropped_with_a_warning(real_store):
    role = real_store.load_role("ux_artisan")
    designer = real_store.load_team("ui_experts").inline_roles["designer"]

    assert "image_analyze" not in (role.tools or ())
    assert "write_file" in (role.tools or ())
    assert any("'image_analyze'" in w.message for w in role.warnings)
    # Listing only unknown tools is not the same as listing none.
    assert designer.tools == ()


def test_issues_come_from_stories_and_cards(real_store):
    sanity = real_store.load_epic("sanity_test")
    branding = real_store.load_epic("branding")

    assert [i.id for i in sanity.issues] == ["SN-001"]
    assert sanity.issues[0].priority == 3.0
    assert sanity.idesign is False
    assert [i.id for i in branding.issues] == ["BRANDING-1", "BRANDING-2"]
    assert all(issue.id_derived for issue in branding.issues)


def test_epic_without_summaries_shows_the_note(real_store):
    layout = real_store.load_epic("ui_vision")

    assert layout.issues[0].summary == "Set the visual direction in Round 1 only."


def test_real_priorities_are_normalised(real_store):
    reforge = real_store.load_epic("model_reforge")
    auth = real_store.load_epic("auth_manager")

    assert [i.priority for i in reforge.issues] == [3.0, 2.0, 3.0]
    assert [i.priority for i in auth.issues] == [3.0, 3.0, 2.0]


def test_check_reports_broken_references_as_warnings(real_store):
    report = real_store.check("core")
    messages = [w.message for w in report.warnings]

    assert "epic 'sneaky_price_watch_refinement' of department 'core' not found" in (
        " ".join(messages)
    )
    assert any("No role 'governance_ethics'" in m for m in messages)
    assert any("No team 'product_owners'" in m for m in messages)


def test_check_of_one_department_covers_it_and_core_only(real_store):
    report = real_store.check("creative")
    departments = {item.department for item in report.files}

    assert departments == {"core", "creative"}
    assert any(item.asset == "epics/void_lore" for item in report.files)


def test_check_of_unknown_department_is_an_error(real_store):
    report = real_store.check("nowhere")

    assert not report.ok
    assert report.errors[0].error == "department not found"


def test_loading_and_checking_never_rewrite_asset_files(real_store):
    def fingerprint() -> dict[Path, str]:
        return {
            path: hashlib.sha256(path.read_bytes()).hexdigest()
            for path in REAL_TREE.rglob("*")
            if path.is_file()
        }

    before = fingerprint()
    real_store.check()
    real_store.load_epic("price_arbitrage_system")

    assert fingerprint() == before


def test_departments_are_core_and_the_model_directories(real_store):
    assert real_store.departments() == [
        "core",
        "creative",
        "engineering",
        "marketing",
        "product",
        "quality",
        "training",
        "uiux",
    ]


# Organization ------------------------------------------------------------------------


def test_config_organization_file_comes_first(real_store):
    organization = real_store.load_organization()

    assert organization.name == "Orket Organizational Unit"
    assert organization.idesign_threshold == 7
    assert organization.origin.path == REAL_CONFIG / "organization.json"


def test_org_info_is_merged_with_architecture(tmp_path):
    config = tmp_path / "config"
    shutil.copytree(REAL_CONFIG, config)
    (config / "organization.json").unlink()
    (config / "architecture.json").write_text(
        json.dumps({"architecture": {"idesign_threshold": 4}}), encoding="utf-8"
    )

    organization = store_for(tmp_path, config, REAL_MODEL).load_organization()

    assert organization.name == "Orket Organizational Unit"
    assert organization.idesign_threshold == 4


def test_model_organization_then_packaged(tmp_path):
    model_org = store_for(tmp_path, tmp_path / "none", REAL_MODEL).load_organization()
    packaged = store_for(
        tmp_path, tmp_path / "none", tmp_path / "no"
    ).load_organization()

    assert model_org.name == "Vibe Rail"
    assert (packaged.name, packaged.idesign_threshold) == ("Orket", 10)


def test_environment_overrides_organization_name_and_vision(tmp_path):
    store = store_for(
        tmp_path, REAL_CONFIG, REAL_MODEL, org_name="Acme", org_vision="Ship it"
    )

    organization = store.load_organization()

    assert (organization.name, organization.vision) == ("Acme", "Ship it")
    assert organization.idesign_threshold == 7


# The packaged demo -------------------------------------------------------------------


def test_packaged_demo_epic(empty_store):
    demo = empty_store.load_epic("demo")
    first, second = demo.issues

    assert (demo.team, demo.environment, demo.idesign) == ("demo_team", "demo", False)
    assert demo.default_build_id == "build-demo"
    assert first.id == "DEMO-1"
    assert first.priority == 3.0
    assert first.verification.fixture_path == "verification/demo/calc_fixture.py"
    scenario = first.verification.scenarios[0]
    assert (scenario.id, scenario.input_data, scenario.expected_output) == (
        "S1",
        {"a": 2, "b": 3},
        5,
    )
    assert second.depends_on == ("DEMO-1",)
    assert not second.has_fixture


def test_packaged_demo_team_environment_and_script(empty_store):
    team = empty_store.load_team("demo_team")
    environment = empty_store.load_environment("demo")

    script = empty_store.script_for(environment)

    assert team.find_seat("builder").roles == ("coder",)
    assert team.review_seat().key == "verifier"
    assert environment.resolved_provider == "scripted"
    assert environment.model == "scripted:demo"
    assert script.on_exhausted == "empty"
    assert script.replies["DEMO-1/coder"][0]["args"]["path"] == "agent_output/calc.py"
    assert "```json" in script.replies["DEMO-1/coder"][1]
    assert [call["tool"] for call in script.replies["DEMO-2/coder"][0]] == [
        "write_file",
        "update_issue_status",
    ]
    assert script.replies["integrity_guard"] == (
        {"tool": "update_issue_status", "args": {"status": "done"}},
    )


def test_packaged_defaults_are_complete_and_clean(empty_store):
    report = empty_store.check()

    assert report.ok, report.lines()
    assert report.warnings == [] and report.infos == []
    assert empty_store.list_assets("dialects") == [
        "deepseek-r1",
        "generic",
        "llama3",
        "phi",
        "qwen",
    ]
    assert empty_store.list_assets("roles") == [
        "coder",
        "integrity_guard",
        "operations_lead",
    ]
    standard = empty_store.load_environment("standard")
    assert (standard.resolved_provider, standard.model) == ("ollama", "llama3.1:8b")
    assert (PACKAGED_ROOT / "organization.json").is_file()


# Issue ids and fields ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("stem", "position", "expected"),
    [
        ("branding", 1, "BRANDING-1"),
        ("price-arbitrage.v2", 3, "PRICE_ARBITRAGE_V2-3"),
        ("Rock Nomination", 12, "ROCK_NOMINATION-12"),
    ],
)
def test_derived_issue_id(stem, position, expected):
    assert derived_issue_id(stem, position) == expected


def test_find_epic_issue_by_explicit_or_derived_id(real_store):
    explicit = real_store.find_epic_issue("AUTH-002")
    derived = real_store.find_epic_issue("WEB_DEV-2")

    assert (explicit.epic.stem, explicit.issue.summary) == (
        "auth_manager",
        "Implement BCrypt password engine",
    )
    assert (derived.epic.stem, derived.issue.position) == ("web_dev", 2)
    assert real_store.find_epic_issue("WEB_DEV-3") is None


def test_derived_id_counts_position_among_all_issues(tmp_path):
    config = tmp_path / "config"
    write_json(
        config / "epics" / "mix.json",
        epic("mix", issues=[{"id": "KEEP", "summary": "a"}, {"summary": "b"}]),
    )

    issues = store_for(tmp_path, config, tmp_path / "m").load_epic("mix").issues

    assert [(i.id, i.id_derived) for i in issues] == [("KEEP", False), ("MIX-2", True)]


@pytest.mark.parametrize(
    ("value", "expected", "warned"),
    [
        (None, 2.0, False),
        (4, 4.0, False),
        (1.5, 1.5, False),
        ("2.5", 2.5, False),
        ("High", 3.0, False),
        ("medium", 2.0, False),
        (" LOW ", 1.0, False),
        ("urgent", 2.0, True),
        (True, 2.0, True),
        ([1], 2.0, True),
    ],
)
def test_priority_normalisation(value, expected, warned):
    priority, warning = normalize_priority(value)

    assert priority == expected
    assert (warning is not None) == warned


def test_issue_defaults_and_fixture_alias(tmp_path):
    config = tmp_path / "config"
    item = {
        "summary": "s",
        "priority": "someday",
        "verification": {"verification_fixture": "verification/x.py"},
    }
    write_json(config / "epics" / "one.json", epic("one", cards=[item]))

    loaded = store_for(tmp_path, config, tmp_path / "m").load_epic("one")
    issue = loaded.issues[0]

    assert (issue.seat, issue.type, issue.max_retries) == ("standard", "issue", 3)
    assert issue.priority == 2.0
    assert issue.verification.fixture_path == "verification/x.py"
    assert issue.has_fixture
    assert any("someday" in w.message for w in loaded.warnings)


def test_first_issue_list_wins_and_the_others_are_warned(tmp_path):
    config = tmp_path / "config"
    data = epic("two", stories=[{"summary": "from stories"}], cards=[{"summary": "c"}])
    write_json(config / "epics" / "two.json", data)

    loaded = store_for(tmp_path, config, tmp_path / "m").load_epic("two")

    assert [i.summary for i in loaded.issues] == ["from stories"]
    assert any("'cards' is ignored" in w.message for w in loaded.warnings)


def test_unknown_epic_status_is_informational(tmp_path):
    config = tmp_path / "config"
    write_json(config / "epics" / "s.json", epic("s", status="someday"))

    loaded = store_for(tmp_path, config, tmp_path / "m").load_epic("s")

    assert loaded.status == "someday"
    assert [w.level for w in loaded.warnings] == ["info"]


# Invalid assets ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"team": "t", "environment": "e",}', "invalid JSON at line 1"),
        ("[1, 2]", "the file must hold a JSON object"),
        ('{"environment": "e"}', "'team' is required"),
        ('{"team": "t", "environment": "e", "issues": {}}', "'issues' must be a list"),
        (
            '{"team": "t", "environment": "e", "issues": [{"id": "A"}, {"id": "A"}]}',
            "issue id 'A' appears more than once",
        ),
        (
            '{"team": "t", "environment": "e", "architecture_governance": []}',
            "'architecture_governance' must be an object",
        ),
    ],
)
def test_invalid_epic_names_its_problem(tmp_path, content, problem):
    config = tmp_path / "config"
    (config / "epics").mkdir(parents=True)
    (config / "epics" / "broken.json").write_text(content, encoding="utf-8")
    store = store_for(tmp_path, config, tmp_path / "m")

    with pytest.raises(AssetError) as caught:
        store.load_epic("broken")

    assert caught.value.message.startswith("Asset broken is invalid: ")
    assert problem in caught.value.problem
    report = store.check()
    assert [Path(item.path).name for item in report.errors] == ["broken.json"]


@pytest.mark.parametrize(
    ("category", "content", "problem"),
    [
        ("teams", {"name": "t"}, "'seats' is required"),
        ("rocks", {"name": "r"}, "'epics' is required"),
        ("roles", {"tools": ["read_file"]}, "'description' is required"),
        ("environments", {"provider": "magic"}, "unknown provider 'magic'"),
        ("scripts", {"on_exhausted": "loop"}, "'on_exhausted' must be one of"),
        ("scripts", {"replies": {"*": "hi"}}, "replies for '*' must be a list"),
    ],
)
def test_invalid_assets_of_other_categories(tmp_path, category, content, problem):
    config = tmp_path / "config"
    write_json(config / category / "bad.json", content)
    store = store_for(tmp_path, config, tmp_path / "m")

    report = store.check()

    assert [item.asset for item in report.errors] == [f"{category}/bad"]
    assert problem in report.errors[0].error


def test_check_lines_put_errors_first_and_end_with_a_summary(tmp_path):
    config = tmp_path / "config"
    shutil.copytree(REAL_CONFIG, config)
    (config / "dialects").mkdir()
    (config / "dialects" / "phi.json").write_text("{", encoding="utf-8")

    lines = store_for(tmp_path, config, REAL_MODEL).check().lines()

    assert lines[0].startswith("ERROR ")
    assert lines[-1].endswith("notes")
    assert "1 errors" in lines[-1]


def test_missing_asset_is_not_found_rather_than_invalid(empty_store):
    with pytest.raises(AssetNotFoundError) as caught:
        empty_store.load_team("nobody")

    assert "team 'nobody'" in str(caught.value)


def test_file_names_that_cannot_be_looked_up_are_warned(tmp_path):
    config = tmp_path / "config"
    write_json(config / "epics" / "my epic.json", epic("spaces"))
    store = store_for(tmp_path, config, tmp_path / "m")

    report = store.check()

    assert "my epic" not in store.list_assets("epics")
    assert any(
        w.asset == "epics/my epic" and "cannot be looked up" in w.message
        for w in report.warnings
    )
