"""Model providers: the HTTP providers against a local server, and the scripted one."""

import json
import logging
import socket
import threading
import time

import pytest
from prometheus_client import REGISTRY
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from app.config import Settings
from app.engine import providers
from app.engine.providers import (
    CompletionOptions,
    ModelConnectionError,
    ModelProviderError,
    ModelTimeoutError,
    OllamaProvider,
    OpenAICompatibleProvider,
    ProviderConfigError,
    ScriptedProvider,
    UnknownProviderError,
    build_provider,
    dialect_for_model,
    resolve_model,
    resolve_provider_name,
    validate_script,
)

MESSAGES = [
    {"role": "system", "content": "You are a coder."},
    {"role": "user", "content": "Write calc.py"},
]
OLLAMA_OK = {
    "model": "llama3.1:8b",
    "message": {"role": "assistant", "content": "Done."},
    "done": True,
    "prompt_eval_count": 12,
    "eval_count": 3,
}
OPENAI_OK = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Done."},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
}


# HTTP servers ---------------------------------------------------------------


@pytest.fixture(scope="module")
def module_server():
    # Threaded, so a handler that sleeps does not hold up the retries behind it.
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    yield server
    server.clear()
    server.stop()


@pytest.fixture
def server(module_server):
    module_server.clear()
    yield module_server
    module_server.clear()


@pytest.fixture
def slow_server():
    """A server of its own, so handlers still asleep after a test disturb no other."""
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    yield server
    server.clear()
    server.stop()


def make_ollama(server, timeout=5.0, **kwargs):
    return OllamaProvider(
        server.url_for("/"), "llama3.1:8b", timeout, retry_base_sec=0, **kwargs
    )


def make_openai(server, timeout=5.0, api_key="sk-test", **kwargs):
    return OpenAICompatibleProvider(
        server.url_for("/v1"), "qwen2.5", api_key, timeout, retry_base_sec=0, **kwargs
    )


HTTP_PROVIDERS = {
    "ollama": (make_ollama, "/api/chat", OLLAMA_OK),
    "openai": (make_openai, "/v1/chat/completions", OPENAI_OK),
}


@pytest.fixture(params=sorted(HTTP_PROVIDERS))
def http_case(request):
    """(factory, path, successful body) for each HTTP provider."""
    return HTTP_PROVIDERS[request.param]


def capture(server, path, body, status=200):
    """Answer `path` with `body` and record each request's JSON and headers."""
    seen = []

    def handler(request: Request) -> Response:
        seen.append({"json": request.get_json(silent=True), "headers": request.headers})
        return Response(json.dumps(body), status, content_type="application/json")

    server.expect_request(path, method="POST").respond_with_handler(handler)
    return seen


def options(**context):
    return CompletionOptions(context={"run_id": "r1", **context})


def model_calls(provider, outcome):
    labels = {"provider": provider, "outcome": outcome}
    return REGISTRY.get_sample_value("orket_model_calls_total", labels) or 0.0


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Ollama ---------------------------------------------------------------------


def test_ollama_sends_the_chat_body_and_reads_content_and_tokens(server):
    seen = capture(server, "/api/chat", OLLAMA_OK)

    completion = make_ollama(server).complete(
        MESSAGES, CompletionOptions(temperature=0.2, seed=7)
    )

    assert seen[0]["json"] == {
        "model": "llama3.1:8b",
        "messages": MESSAGES,
        "stream": False,
        "options": {"temperature": 0.2, "seed": 7},
    }
    assert completion.text == "Done."
    assert completion.usage == {
        "prompt_tokens": 12,
        "completion_tokens": 3,
        "total_tokens": 15,
    }
    assert (completion.model, completion.provider) == ("llama3.1:8b", "ollama")
    assert completion.latency_ms >= 0


def test_ollama_leaves_an_unset_seed_out_of_the_options(server):
    seen = capture(server, "/api/chat", OLLAMA_OK)

    make_ollama(server).complete(MESSAGES, CompletionOptions())

    assert seen[0]["json"]["options"] == {"temperature": 0.0}


def test_ollama_missing_token_counts_are_zero(server):
    body = {"message": {"role": "assistant", "content": "Hi"}, "done": True}
    capture(server, "/api/chat", body)

    completion = make_ollama(server).complete(MESSAGES, CompletionOptions())

    assert completion.usage == {
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
    }


@pytest.mark.parametrize(
    ("content", "prefix"), [("", ""), ("Reading it.", "Reading it.\n")]
)
def test_ollama_native_tool_calls_are_appended_as_json(server, content, prefix):
    tool_calls = [
        {"function": {"name": "read_file", "arguments": {"path": "a.txt"}}},
        {"function": {"name": "list_directory", "arguments": {}}},
    ]
    body = {
        "message": {"role": "assistant", "content": content, "tool_calls": tool_calls},
        "done": True,
    }
    capture(server, "/api/chat", body)

    completion = make_ollama(server).complete(MESSAGES, CompletionOptions())

    assert completion.text == prefix + (
        '{"tool_calls":[{"function":{"name":"read_file","arguments":{"path":"a.txt"}}},'
        '{"function":{"name":"list_directory","arguments":{}}}]}'
    )


# OpenAI-compatible ----------------------------------------------------------


def test_openai_sends_the_completion_body_with_a_bearer_key(server):
    seen = capture(server, "/v1/chat/completions", OPENAI_OK)

    completion = make_openai(server).complete(
        MESSAGES, CompletionOptions(temperature=0.5, seed=42)
    )

    assert seen[0]["json"] == {
        "model": "qwen2.5",
        "messages": MESSAGES,
        "temperature": 0.5,
        "seed": 42,
        "stream": False,
    }
    assert seen[0]["headers"]["Authorization"] == "Bearer sk-test"
    assert completion.text == "Done."
    assert completion.usage == {
        "prompt_tokens": 12,
        "completion_tokens": 3,
        "total_tokens": 15,
    }
    assert (completion.model, completion.provider) == ("qwen2.5", "openai")


def test_openai_without_a_key_sends_no_authorization_and_no_unset_seed(server):
    seen = capture(server, "/v1/chat/completions", OPENAI_OK)

    make_openai(server, api_key=None).complete(MESSAGES, CompletionOptions())

    assert "Authorization" not in seen[0]["headers"]
    assert "seed" not in seen[0]["json"]


@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/"])
def test_openai_base_url_may_end_in_v1_or_a_slash(server, suffix):
    capture(server, "/v1/chat/completions", OPENAI_OK)
    base_url = server.url_for("/").rstrip("/") + suffix
    provider = OpenAICompatibleProvider(base_url, "m", None, 5.0, retry_base_sec=0)

    completion = provider.complete(MESSAGES, CompletionOptions())

    assert completion.text == "Done."
    assert [request.path for request, _ in server.log] == ["/v1/chat/completions"]


def test_openai_null_content_with_native_tool_calls_gives_only_the_calls(server):
    tool_calls = [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "write_file", "arguments": '{"path":"o.py"}'},
        }
    ]
    body = {
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": tool_calls,
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 9},
    }
    capture(server, "/v1/chat/completions", body)

    completion = make_openai(server).complete(MESSAGES, CompletionOptions())

    assert completion.text == (
        '{"tool_calls":[{"id":"call_1","type":"function",'
        '"function":{"name":"write_file","arguments":"{\\"path\\":\\"o.py\\"}"}}]}'
    )
    assert json.loads(completion.text) == {"tool_calls": tool_calls}
    assert completion.usage["total_tokens"] == 14


# Retries and failures (both HTTP providers) -----------------------------------


def test_server_error_is_retried_then_succeeds(server, http_case):
    factory, path, ok_body = http_case
    server.expect_oneshot_request(path, method="POST").respond_with_data(
        "overloaded", status=503
    )
    server.expect_request(path, method="POST").respond_with_json(ok_body)

    completion = factory(server).complete(MESSAGES, CompletionOptions())

    assert completion.text == "Done."
    assert [response.status_code for _, response in server.log] == [503, 200]


def test_server_error_three_times_is_a_provider_error(server, http_case):
    factory, path, _ = http_case
    server.expect_request(path, method="POST").respond_with_data("down", status=500)

    with pytest.raises(ModelProviderError, match="HTTP 500") as raised:
        factory(server).complete(MESSAGES, CompletionOptions())

    assert type(raised.value) is ModelProviderError
    assert len(server.log) == 3


def test_retries_sleep_the_base_then_twice_the_base(server, monkeypatch):
    sleeps = []
    monkeypatch.setattr(providers, "sleep", sleeps.append)
    server.expect_request("/api/chat").respond_with_data("down", status=502)
    provider = OllamaProvider(server.url_for("/"), "m", 5.0, retry_base_sec=1.5)

    with pytest.raises(ModelProviderError):
        provider.complete(MESSAGES, CompletionOptions())

    assert sleeps == [1.5, 3.0]


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_client_error_fails_at_once_without_retry(server, http_case, status):
    factory, path, _ = http_case
    server.expect_request(path, method="POST").respond_with_json(
        {"error": "model not found"}, status=status
    )

    with pytest.raises(ModelProviderError, match=f"HTTP {status}.*model not found"):
        factory(server).complete(MESSAGES, CompletionOptions())

    assert len(server.log) == 1


def test_slow_server_times_out_after_three_attempts(slow_server, http_case):
    factory, path, ok_body = http_case
    attempts = []

    def slow(request: Request) -> Response:
        attempts.append(request.path)
        time.sleep(0.5)
        return Response(json.dumps(ok_body), content_type="application/json")

    slow_server.expect_request(path, method="POST").respond_with_handler(slow)

    with pytest.raises(ModelTimeoutError):
        factory(slow_server, timeout=0.1).complete(MESSAGES, CompletionOptions())

    deadline = time.monotonic() + 2.0
    while len(attempts) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(attempts) == 3


def test_call_timeout_overrides_the_provider_timeout(slow_server):
    def slow(request: Request) -> Response:
        time.sleep(0.5)
        return Response(json.dumps(OLLAMA_OK), content_type="application/json")

    slow_server.expect_request("/api/chat").respond_with_handler(slow)

    started = time.monotonic()
    with pytest.raises(ModelTimeoutError):
        make_ollama(slow_server, timeout=30.0).complete(
            MESSAGES, CompletionOptions(timeout=0.1)
        )

    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("factory", [make_ollama, make_openai])
def test_refused_connection_is_a_connection_error(factory):
    class Closed:
        port = free_port()

        def url_for(self, suffix):
            return f"http://127.0.0.1:{self.port}{suffix}"

    with pytest.raises(ModelConnectionError):
        factory(Closed()).complete(MESSAGES, CompletionOptions())


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b'{"done": true}',
        b'{"message": {"content": 5}, "choices": [{"message": {"content": 5}}]}',
        b'{"message": "text", "choices": []}',
    ],
)
def test_malformed_body_is_a_provider_error_without_retry(server, http_case, body):
    factory, path, _ = http_case
    server.expect_request(path, method="POST").respond_with_data(
        body, content_type="application/json"
    )

    with pytest.raises(ModelProviderError) as raised:
        factory(server).complete(MESSAGES, CompletionOptions())

    assert not raised.value.retryable
    assert len(server.log) == 1


def test_oversized_response_is_refused(server, http_case, monkeypatch):
    factory, path, ok_body = http_case
    monkeypatch.setattr(providers, "MAX_RESPONSE_BYTES", 1000)
    huge = dict(ok_body, padding="x" * 5000)
    server.expect_request(path, method="POST").respond_with_json(huge)

    with pytest.raises(ModelProviderError, match="larger than 1000 bytes"):
        factory(server).complete(MESSAGES, CompletionOptions())


def test_api_key_never_appears_in_errors_or_logs(server, caplog):
    server.expect_request("/v1/chat/completions").respond_with_data("bad", status=500)
    provider = make_openai(server, api_key="sk-very-secret")

    with caplog.at_level(logging.DEBUG), pytest.raises(ModelProviderError) as raised:
        provider.complete(MESSAGES, options(issue_id="DEMO-1"))

    assert "retrying" in caplog.text
    assert "sk-very-secret" not in caplog.text
    assert "sk-very-secret" not in str(raised.value)
    assert "sk-very-secret" not in repr(provider)


def test_http_calls_are_counted_by_provider_and_outcome(server, http_case):
    factory, path, ok_body = http_case
    provider = factory(server)
    server.expect_oneshot_request(path).respond_with_json(ok_body)
    server.expect_oneshot_request(path).respond_with_data("no", status=404)
    ok_before = model_calls(provider.name, "ok")
    error_before = model_calls(provider.name, "error")

    provider.complete(MESSAGES, CompletionOptions())
    with pytest.raises(ModelProviderError):
        provider.complete(MESSAGES, CompletionOptions())

    assert model_calls(provider.name, "ok") == ok_before + 1
    assert model_calls(provider.name, "error") == error_before + 1


# Scripted provider ----------------------------------------------------------


def script(replies, **extra):
    return {"schema": "orket-script/1", "replies": replies, **extra}


PRECEDENCE_KEYS = {
    "DEMO-1/coder": ["issue and role"],
    "DEMO-1": ["issue"],
    "coder": ["role"],
    "*": ["anyone"],
}


@pytest.mark.parametrize(
    ("present", "expected"),
    [
        (["DEMO-1/coder", "DEMO-1", "coder", "*"], "issue and role"),
        (["DEMO-1", "coder", "*"], "issue"),
        (["coder", "*"], "role"),
        (["*"], "anyone"),
        ([], ""),
    ],
)
def test_scripted_reply_comes_from_the_most_specific_key(present, expected):
    replies = {key: PRECEDENCE_KEYS[key] for key in present}
    provider = ScriptedProvider(script(replies), "demo")

    completion = provider.complete(MESSAGES, options(issue_id="DEMO-1", role="coder"))

    assert completion.text == expected


def test_scripted_key_ignores_the_build_suffix_of_the_issue_id():
    provider = ScriptedProvider(script({"DEMO-1/coder": ["hit"]}), "demo")

    completion = provider.complete(
        MESSAGES, options(issue_id="DEMO-1@b7", role="coder")
    )

    assert completion.text == "hit"


def test_scripted_chat_driver_uses_the_driver_key():
    replies = {"DRIVER": ["driver reply"], "operations_lead": ["role reply"]}
    provider = ScriptedProvider(script(replies), "demo")

    completion = provider.complete(
        MESSAGES, options(issue_id="DRIVER", role="operations_lead")
    )

    assert completion.text == "driver reply"


def test_scripted_strings_are_verbatim_and_objects_compact_json():
    replies = {
        "coder": [
            'Written.\n```json\n{"tool": "x"}\n```',
            {"tool": "write_file", "args": {"path": "a.py", "content": "é"}},
            [{"tool": "a", "args": {}}, {"tool": "b"}],
        ]
    }
    provider = ScriptedProvider(script(replies), "demo")

    texts = [provider.complete(MESSAGES, options(role="coder")).text for _ in range(3)]

    assert texts == [
        'Written.\n```json\n{"tool": "x"}\n```',
        '{"tool":"write_file","args":{"path":"a.py","content":"é"}}',
        '[{"tool":"a","args":{}},{"tool":"b"}]',
    ]


def test_scripted_cursor_is_kept_per_run_issue_and_key():
    replies = {"integrity_guard": ["first", "second"], "DEMO-1/coder": ["c1", "c2"]}
    provider = ScriptedProvider(script(replies), "demo")

    def reply(run_id, issue_id, role):
        context = {"run_id": run_id, "issue_id": issue_id, "role": role}
        return provider.complete(MESSAGES, CompletionOptions(context=context)).text

    assert reply("r1", "DEMO-1", "integrity_guard") == "first"
    assert reply("r1", "DEMO-2", "integrity_guard") == "first"
    assert reply("r1", "DEMO-1", "coder") == "c1"
    assert reply("r1", "DEMO-1", "integrity_guard") == "second"
    assert reply("r2", "DEMO-1", "integrity_guard") == "first"
    assert reply("r1", "DEMO-1", "coder") == "c2"


def test_scripted_cursor_is_safe_across_threads():
    entries = [f"reply {number}" for number in range(200)]
    provider = ScriptedProvider(script({"*": entries}), "demo")
    results = []
    results_lock = threading.Lock()
    start = threading.Barrier(8)

    def worker():
        start.wait()
        for _ in range(25):
            text = provider.complete(MESSAGES, options(issue_id="DEMO-1")).text
            with results_lock:
                results.append(text)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(results) == sorted(entries)
    assert provider.complete(MESSAGES, options(issue_id="DEMO-1")).text == ""


@pytest.mark.parametrize(
    ("mode", "after"),
    [(None, ""), ("empty", ""), ("repeat_last", "two")],
)
def test_scripted_exhausted_list_replies_per_mode(mode, after):
    extra = {} if mode is None else {"on_exhausted": mode}
    provider = ScriptedProvider(script({"coder": ["one", "two"]}, **extra), "demo")

    texts = [provider.complete(MESSAGES, options(role="coder")).text for _ in range(4)]

    assert texts == ["one", "two", after, after]


def test_scripted_exhausted_list_in_error_mode_is_a_provider_error():
    provider = ScriptedProvider(
        script({"coder": ["one"]}, on_exhausted="error"), "demo"
    )
    provider.complete(MESSAGES, options(role="coder"))
    errors_before = model_calls("scripted", "error")

    with pytest.raises(ModelProviderError, match="no more replies for 'coder'"):
        provider.complete(MESSAGES, options(role="coder"))

    assert model_calls("scripted", "error") == errors_before + 1


def test_scripted_delay_is_slept_before_each_reply():
    provider = ScriptedProvider(script({"*": ["a", "b"]}, delay_ms=120), "demo")

    started = time.monotonic()
    first = provider.complete(MESSAGES, options())
    provider.complete(MESSAGES, options())

    assert time.monotonic() - started >= 0.24
    assert first.latency_ms >= 120


def test_scripted_tokens_are_characters_divided_by_four():
    messages = [
        {"role": "system", "content": "a" * 10},
        {"role": "user", "content": "b" * 7},
    ]
    provider = ScriptedProvider(script({"*": ["x" * 9]}), "demo")

    completion = provider.complete(messages, options())

    assert completion.usage == {
        "prompt_tokens": 4,
        "completion_tokens": 2,
        "total_tokens": 6,
    }
    assert (completion.model, completion.provider) == ("scripted:demo", "scripted")


def test_scripted_replies_are_deterministic():
    replies = {
        "DEMO-1/coder": [{"tool": "write_file", "args": {"path": "a"}}, "Done."],
        "integrity_guard": [
            {"tool": "update_issue_status", "args": {"status": "done"}}
        ],
    }
    calls = [
        ("DEMO-1", "coder"),
        ("DEMO-1", "integrity_guard"),
        ("DEMO-1", "coder"),
        ("DEMO-2", "coder"),
    ]

    def replay():
        provider = ScriptedProvider(script(replies), "demo")
        results = []
        for issue_id, role in calls:
            completion = provider.complete(
                MESSAGES, options(issue_id=issue_id, role=role)
            )
            results.append((completion.text, completion.usage))
        return results

    assert replay() == replay()
    assert [text for text, _ in replay()][:3] == [
        '{"tool":"write_file","args":{"path":"a"}}',
        '{"tool":"update_issue_status","args":{"status":"done"}}',
        "Done.",
    ]


def test_valid_script_has_no_problems():
    demo = script(
        {"DEMO-1/coder": ["x"], "integrity_guard": [{"tool": "t"}]},
        on_exhausted="repeat_last",
        delay_ms=0,
    )

    assert validate_script(demo) == []


@pytest.mark.parametrize(
    ("candidate", "problem"),
    [
        ([], "script must be a JSON object"),
        ({"replies": {}}, "schema must be 'orket-script/1'"),
        ({"schema": "orket-script/2", "replies": {}}, "schema must be"),
        ({"schema": "orket-script/1"}, "replies must be an object"),
        ({"schema": "orket-script/1", "replies": []}, "replies must be an object"),
        (script({"coder": "just text"}), "replies['coder'] must be a list"),
        (script({}, on_exhausted="loop"), "on_exhausted must be one of"),
        (script({}, delay_ms=-1), "delay_ms must be"),
        (script({}, delay_ms="5"), "delay_ms must be"),
    ],
)
def test_invalid_script_problems_are_named(candidate, problem):
    problems = validate_script(candidate)

    assert any(problem in item for item in problems), problems


def test_scripted_provider_refuses_an_invalid_script():
    with pytest.raises(ProviderConfigError, match="Script 'demo' is invalid"):
        ScriptedProvider({"schema": "nope", "replies": {}}, "demo")


# Choosing a provider, model and dialect ----------------------------------------


@pytest.mark.parametrize(
    ("env_provider", "model", "expected"),
    [
        ("openai", "scripted:demo", "openai"),
        (" Ollama ", "qwen2.5", "ollama"),
        (None, "scripted:demo", "scripted"),
        ("", "scripted:demo", "scripted"),
        (None, "llama3.1:8b", "ollama"),
    ],
)
def test_resolve_provider_name(env_provider, model, expected):
    assert resolve_provider_name(env_provider, model) == expected


@pytest.mark.parametrize(
    ("overrides", "env_model", "org_default", "expected"),
    [
        ({"coder": "qwen2.5"}, "phi3", "mistral", "qwen2.5"),
        ({"architect": "qwen2.5"}, "phi3", "mistral", "phi3"),
        ({}, None, "mistral", "mistral"),
        (None, "", "  ", "llama3.1:8b"),
        ({"coder": ""}, None, None, "llama3.1:8b"),
    ],
)
def test_resolve_model_falls_back_in_order(overrides, env_model, org_default, expected):
    assert resolve_model("coder", overrides, env_model, org_default) == expected


@pytest.mark.parametrize(
    ("model", "dialect"),
    [
        ("Qwen2.5-Coder:7b", "qwen"),
        ("llama3.1:8b", "llama3"),
        ("codellama", "llama3"),
        ("deepseek-coder-v2", "deepseek-r1"),
        ("phi3:mini", "phi"),
        ("mistral", "generic"),
        ("scripted:demo", "generic"),
    ],
)
def test_dialect_for_model(model, dialect):
    assert dialect_for_model(model) == dialect


@pytest.fixture
def settings(tmp_path):
    return Settings(
        data_dir=tmp_path,
        ollama_host="http://127.0.0.1:11434",
        openai_base_url="http://127.0.0.1:8000/v1",
        openai_api_key="sk-test",
        model_timeout_sec=300.0,
        model_retry_base_sec=0.5,
    )


def test_build_provider_makes_an_ollama_provider_from_settings(settings):
    provider = build_provider(settings, "ollama", "llama3.1:8b", None, None)

    assert isinstance(provider, OllamaProvider)
    assert provider.url == "http://127.0.0.1:11434/api/chat"
    assert (provider.model, provider.timeout) == ("llama3.1:8b", 300.0)
    assert provider.retry_base_sec == 0.5


def test_build_provider_prefers_the_environment_timeout(settings):
    provider = build_provider(settings, "openai", "qwen2.5", 12.0, None)

    assert isinstance(provider, OpenAICompatibleProvider)
    assert provider.url == "http://127.0.0.1:8000/v1/chat/completions"
    assert provider.timeout == 12.0


def test_build_provider_makes_a_scripted_provider_named_by_the_model(settings):
    provider = build_provider(
        settings, "scripted", "scripted:demo", None, script({"*": ["hi"]})
    )

    assert isinstance(provider, ScriptedProvider)
    assert provider.complete(MESSAGES, options()).model == "scripted:demo"


def test_build_provider_rejects_an_unknown_name(settings):
    with pytest.raises(UnknownProviderError, match="Unknown provider 'gemini'"):
        build_provider(settings, "gemini", "m", None, None)

    assert issubclass(UnknownProviderError, ValueError)


@pytest.mark.parametrize(
    ("overrides", "name", "message"),
    [
        ({"openai_base_url": None}, "openai", "ORKET_OPENAI_BASE_URL"),
        ({}, "scripted", "no script"),
    ],
)
def test_build_provider_needs_its_configuration(tmp_path, overrides, name, message):
    settings = Settings(data_dir=tmp_path, **overrides)

    with pytest.raises(ProviderConfigError, match=message):
        build_provider(settings, name, "scripted:demo", None, None)
