"""Model providers (ENG-11, ENG-12): one `complete()` call, three back ends.

`ollama` and `openai` talk HTTP to a model server with a small retry policy;
`scripted` replays a JSON script so that runs work without any model server.
The module is pure: no Flask, no database. The caller turns each `Completion`
into a `model_usage` event; here every call is only counted in
`orket_model_calls_total`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from time import sleep
from typing import TYPE_CHECKING, Any, Protocol

import requests

from app.metrics import MODEL_CALLS

if TYPE_CHECKING:
    from app.config import Settings

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "llama3.1:8b"
SCRIPT_SCHEMA = "orket-script/1"
ON_EXHAUSTED_MODES = ("empty", "repeat_last", "error")
MAX_ATTEMPTS = 3
# A chat reply is text; anything far beyond this is a misbehaving server.
MAX_RESPONSE_BYTES = 8 * 1024 * 1024
ERROR_BODY_CHARS = 200


@dataclass(frozen=True)
class CompletionOptions:
    """Per-call options; `context` holds run_id, issue_id, role and review."""

    temperature: float = 0.0
    seed: int | None = None
    timeout: float | None = None
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Completion:
    """One model reply; `usage` has prompt_tokens, completion_tokens, total_tokens."""

    text: str
    usage: dict[str, int]
    model: str
    provider: str
    latency_ms: int


class ModelProviderError(Exception):
    """A model call failed; after the provider's own retries it is final (ENG-10).

    `retryable` marks failures worth another attempt: timeouts, connection errors
    and 5xx answers.
    """

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class ModelTimeoutError(ModelProviderError):
    """The model server did not answer within the timeout."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


class ModelConnectionError(ModelProviderError):
    """The model server could not be reached, or dropped the connection."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


class ProviderConfigError(ValueError):
    """A provider cannot be built from the settings and script given."""


class UnknownProviderError(ProviderConfigError):
    """The provider name is not one of ollama, openai, scripted."""


class ModelProvider(Protocol):
    """What the engine calls: one chat completion, or a ModelProviderError."""

    def complete(
        self, messages: list[dict[str, Any]], options: CompletionOptions
    ) -> Completion: ...


@contextmanager
def _counted(provider: str) -> Iterator[None]:
    """Count one call in orket_model_calls_total: `error` if it raised, else `ok`."""
    try:
        yield
    except Exception:
        MODEL_CALLS.labels(provider=provider, outcome="error").inc()
        raise
    MODEL_CALLS.labels(provider=provider, outcome="ok").inc()


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _usage(prompt: int, completion: int, total: int | None = None) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion if total is None else total,
    }


def _token_count(value: Any) -> int:
    """A token count from a response; anything but a non-negative integer is 0."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return 0


def _compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _with_tool_calls(text: str, tool_calls: Any) -> str:
    """Append native tool calls as `{"tool_calls":[...]}` for the ENG-8 parser."""
    if not isinstance(tool_calls, list) or not tool_calls:
        return text
    block = _compact_json({"tool_calls": tool_calls})
    return f"{text}\n{block}" if text else block


class _HttpChatProvider(ABC):
    """One JSON POST per call, with retries and a bound on the response size."""

    name = ""

    def __init__(
        self,
        url: str,
        model: str,
        timeout: float,
        retry_base_sec: float,
        session: requests.Session | None,
        headers: dict[str, str],
    ) -> None:
        self.url = url
        self.model = model
        self.timeout = timeout
        self.retry_base_sec = retry_base_sec
        self._session = session or requests.Session()
        # May carry the API key: never logged, never part of an error message.
        self._headers = headers

    def complete(
        self, messages: list[dict[str, Any]], options: CompletionOptions
    ) -> Completion:
        started = time.monotonic()
        with _counted(self.name):
            body = self._post(self._request_body(messages, options), options)
            text, usage = self._parse(body)
        return Completion(
            text=text,
            usage=usage,
            model=self.model,
            provider=self.name,
            latency_ms=_elapsed_ms(started),
        )

    @abstractmethod
    def _request_body(
        self, messages: list[dict[str, Any]], options: CompletionOptions
    ) -> dict[str, Any]: ...

    @abstractmethod
    def _parse(self, body: dict[str, Any]) -> tuple[str, dict[str, int]]:
        """The reply text (with native tool calls appended) and the usage."""

    def _post(
        self, payload: dict[str, Any], options: CompletionOptions
    ) -> dict[str, Any]:
        """POST with up to MAX_ATTEMPTS tries, sleeping base, then 2 x base, between."""
        timeout = self.timeout if options.timeout is None else options.timeout
        attempt = 1
        while True:
            try:
                return self._post_once(payload, timeout)
            except ModelProviderError as exc:
                if not exc.retryable or attempt == MAX_ATTEMPTS:
                    raise
                delay = self.retry_base_sec * 2 ** (attempt - 1)
                logger.warning(
                    "%s call failed (attempt %d of %d), retrying in %.1f s: %s "
                    "run_id=%s issue_id=%s",
                    self.name,
                    attempt,
                    MAX_ATTEMPTS,
                    delay,
                    exc,
                    options.context.get("run_id"),
                    options.context.get("issue_id"),
                )
                sleep(delay)
                attempt += 1

    def _post_once(self, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        try:
            with self._session.post(
                self.url,
                json=payload,
                headers=self._headers,
                timeout=timeout,
                stream=True,
            ) as response:
                status = response.status_code
                raw = self._read_bounded(response)
        except requests.Timeout as exc:
            raise ModelTimeoutError(
                f"{self.name} did not answer within {timeout:g} s"
            ) from exc
        except (
            requests.ConnectionError,
            requests.exceptions.ChunkedEncodingError,
        ) as exc:
            raise ModelConnectionError(
                f"cannot reach {self.name} at {self.url}"
            ) from exc
        except requests.RequestException as exc:
            raise ModelProviderError(f"{self.name} request failed: {exc}") from exc

        if not 200 <= status < 300:
            snippet = " ".join(
                raw[:ERROR_BODY_CHARS].decode("utf-8", "replace").split()
            )
            raise ModelProviderError(
                f"{self.name} answered HTTP {status}: {snippet}",
                retryable=status >= 500,
            )
        return self._decode(raw)

    def _read_bounded(self, response: requests.Response) -> bytes:
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_content(chunk_size=64 * 1024):
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                raise ModelProviderError(
                    f"{self.name} response is larger than {MAX_RESPONSE_BYTES} bytes"
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def _decode(self, raw: bytes) -> dict[str, Any]:
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise ModelProviderError(f"{self.name} response is not JSON") from exc
        if not isinstance(body, dict):
            raise ModelProviderError(f"{self.name} response is not a JSON object")
        return body

    def _message(self, value: Any) -> tuple[str, Any]:
        """Content and native tool calls of a response's `message` object."""
        if not isinstance(value, dict):
            raise ModelProviderError(f"{self.name} response has no message object")
        content = value.get("content")
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise ModelProviderError(f"{self.name} message content is not text")
        return content, value.get("tool_calls")


class OllamaProvider(_HttpChatProvider):
    """Ollama's native chat API, `POST {host}/api/chat`, without streaming."""

    name = "ollama"

    def __init__(
        self,
        host: str,
        model: str,
        timeout: float,
        retry_base_sec: float = 1.0,
        session: requests.Session | None = None,
    ) -> None:
        url = f"{host.rstrip('/')}/api/chat"
        super().__init__(url, model, timeout, retry_base_sec, session, headers={})

    def _request_body(
        self, messages: list[dict[str, Any]], options: CompletionOptions
    ) -> dict[str, Any]:
        # An unset seed is left out rather than sent as null.
        model_options: dict[str, Any] = {"temperature": options.temperature}
        if options.seed is not None:
            model_options["seed"] = options.seed
        return {
            "model": self.model,
            "messages": messages,
            "stream": False,
            "options": model_options,
        }

    def _parse(self, body: dict[str, Any]) -> tuple[str, dict[str, int]]:
        content, tool_calls = self._message(body.get("message"))
        usage = _usage(
            _token_count(body.get("prompt_eval_count")),
            _token_count(body.get("eval_count")),
        )
        return _with_tool_calls(content, tool_calls), usage


class OpenAICompatibleProvider(_HttpChatProvider):
    """Any OpenAI-style chat completions server (llama.cpp, vLLM, LM Studio)."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None,
        timeout: float,
        retry_base_sec: float = 1.0,
        session: requests.Session | None = None,
    ) -> None:
        root = base_url.rstrip("/").removesuffix("/v1").rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        url = f"{root}/v1/chat/completions"
        super().__init__(url, model, timeout, retry_base_sec, session, headers)

    def _request_body(
        self, messages: list[dict[str, Any]], options: CompletionOptions
    ) -> dict[str, Any]:
        # An unset seed is left out rather than sent as null.
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": options.temperature,
            "stream": False,
        }
        if options.seed is not None:
            body["seed"] = options.seed
        return body

    def _parse(self, body: dict[str, Any]) -> tuple[str, dict[str, int]]:
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ModelProviderError(f"{self.name} response has no choices")
        first = choices[0] if isinstance(choices[0], dict) else {}
        content, tool_calls = self._message(first.get("message"))
        reported = body.get("usage")
        counts = reported if isinstance(reported, dict) else {}
        prompt = _token_count(counts.get("prompt_tokens"))
        completion = _token_count(counts.get("completion_tokens"))
        total = _token_count(counts.get("total_tokens")) or None
        return _with_tool_calls(content, tool_calls), _usage(prompt, completion, total)


def validate_script(script: Any) -> list[str]:
    """Problems that make a reply script unusable; an empty list means it is fine."""
    if not isinstance(script, dict):
        return ["script must be a JSON object"]
    problems = []
    if script.get("schema") != SCRIPT_SCHEMA:
        problems.append(f"schema must be '{SCRIPT_SCHEMA}'")
    replies = script.get("replies")
    if not isinstance(replies, dict):
        problems.append("replies must be an object")
    else:
        for key, entries in replies.items():
            if not isinstance(entries, list):
                problems.append(f"replies['{key}'] must be a list")
    if script.get("on_exhausted", "empty") not in ON_EXHAUSTED_MODES:
        problems.append("on_exhausted must be one of " + ", ".join(ON_EXHAUSTED_MODES))
    delay = script.get("delay_ms", 0)
    if isinstance(delay, bool) or not isinstance(delay, (int, float)) or delay < 0:
        problems.append("delay_ms must be a number of milliseconds, 0 or more")
    return problems


def _reply_text(entry: Any) -> str:
    return entry if isinstance(entry, str) else _compact_json(entry)


def _message_chars(messages: list[dict[str, Any]]) -> int:
    contents = (message.get("content") for message in messages)
    return sum(len(content) for content in contents if isinstance(content, str))


class ScriptedProvider:
    """Replays the replies of an `orket-script/1` script (ENG-12).

    The reply for a call comes from the first key present among
    `<issue>/<role>`, `<issue>`, `<role>` and `*`; each key's list is consumed in
    order with its own cursor per run and issue. One instance is shared by the
    attempt threads of a run, so the cursors sit behind a lock.
    """

    name = "scripted"

    def __init__(self, script: dict[str, Any], script_name: str) -> None:
        problems = validate_script(script)
        if problems:
            raise ProviderConfigError(
                f"Script '{script_name}' is invalid: " + "; ".join(problems)
            )
        self.script_name = script_name
        self.model = f"scripted:{script_name}"
        self._replies = {
            key: tuple(_reply_text(entry) for entry in entries)
            for key, entries in script["replies"].items()
        }
        self._on_exhausted = script.get("on_exhausted", "empty")
        self._delay_sec = script.get("delay_ms", 0) / 1000
        self._cursors: dict[tuple[str, str, str], int] = {}
        self._lock = threading.Lock()

    def complete(
        self, messages: list[dict[str, Any]], options: CompletionOptions
    ) -> Completion:
        started = time.monotonic()
        with _counted(self.name):
            if self._delay_sec:
                sleep(self._delay_sec)
            text = self._next_reply(options.context)
        return Completion(
            text=text,
            usage=_usage(_message_chars(messages) // 4, len(text) // 4),
            model=self.model,
            provider=self.name,
            latency_ms=_elapsed_ms(started),
        )

    def _next_reply(self, context: dict[str, Any]) -> str:
        key = self._key_for(context)
        if key is None:
            return ""
        replies = self._replies[key]
        cursor = (str(context.get("run_id")), str(context.get("issue_id")), key)
        with self._lock:
            index = self._cursors.get(cursor, 0)
            self._cursors[cursor] = index + 1
        if index < len(replies):
            return replies[index]
        return self._when_exhausted(key, replies)

    def _key_for(self, context: dict[str, Any]) -> str | None:
        issue = str(context.get("issue_id") or "").partition("@")[0]
        role = str(context.get("role") or "")
        candidates = []
        if issue and role:
            candidates.append(f"{issue}/{role}")
        candidates.extend(name for name in (issue, role) if name)
        candidates.append("*")
        return next((key for key in candidates if key in self._replies), None)

    def _when_exhausted(self, key: str, replies: tuple[str, ...]) -> str:
        if self._on_exhausted == "error":
            raise ModelProviderError(
                f"Script '{self.script_name}' has no more replies for '{key}'"
            )
        if self._on_exhausted == "repeat_last" and replies:
            return replies[-1]
        return ""


def build_provider(
    settings: Settings,
    provider_name: str,
    model: str,
    timeout: float | None,
    script: dict[str, Any] | None,
) -> ModelProvider:
    """The provider named by an environment asset (ENG-11).

    `timeout` is the environment's own and falls back to ORKET_MODEL_TIMEOUT_SEC.
    Raises UnknownProviderError for an unknown name and ProviderConfigError when
    the chosen provider lacks what it needs.
    """
    name = provider_name.strip().lower()
    http_timeout = settings.model_timeout_sec if timeout is None else timeout
    retry_base_sec = settings.model_retry_base_sec
    if name == "ollama":
        return OllamaProvider(settings.ollama_host, model, http_timeout, retry_base_sec)
    if name == "openai":
        if not settings.openai_base_url:
            raise ProviderConfigError("provider 'openai' needs ORKET_OPENAI_BASE_URL")
        return OpenAICompatibleProvider(
            settings.openai_base_url,
            model,
            settings.openai_api_key,
            http_timeout,
            retry_base_sec,
        )
    if name == "scripted":
        if script is None:
            raise ProviderConfigError(
                f"provider 'scripted' has no script for '{model}'"
            )
        return ScriptedProvider(script, model.removeprefix("scripted:"))
    raise UnknownProviderError(f"Unknown provider '{provider_name}'")


def resolve_provider_name(env_provider: str | None, model: str) -> str:
    """The environment provider, else `scripted` for `scripted:` models, else ollama."""
    if env_provider and env_provider.strip():
        return env_provider.strip().lower()
    return "scripted" if model.startswith("scripted:") else "ollama"


def resolve_model(
    role: str,
    model_overrides: dict[str, Any] | None,
    env_model: str | None,
    org_default: str | None,
) -> str:
    """Epic override for the role, environment model, org default, then llama3.1:8b."""
    candidates = ((model_overrides or {}).get(role), env_model, org_default)
    chosen = (item.strip() for item in candidates if isinstance(item, str))
    return next((model for model in chosen if model), DEFAULT_MODEL)


def dialect_for_model(model: str) -> str:
    """The prompt dialect family for a model name, by substring (ENG-11)."""
    lowered = model.lower()
    for marker, dialect in (
        ("qwen", "qwen"),
        ("llama", "llama3"),
        ("deepseek", "deepseek-r1"),
        ("phi", "phi"),
    ):
        if marker in lowered:
            return dialect
    return "generic"
