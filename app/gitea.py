"""Gitea REST client (SPEC WH-10), used by the outbox worker and the CLI.

Every call answers with a `GiteaResponse`, whatever the HTTP status: the outbox
decides what a 404 or a 405 means, not this module. Only "no usable answer" raises:
`GiteaUnavailable` for connection errors and timeouts, `GiteaBadResponse` for an
answer that is too large or is a success whose JSON does not have the expected shape.
Both derive from `GiteaError`; for a write, either means the outcome is unknown.

Writes never follow redirects: a redirected POST would be replayed, or silently turned
into a GET by the HTTP client, against a URL we did not choose. Responses are read
up to 1 MiB. The token and password live only in the session; nothing here logs
headers, bodies or exception texts that could carry them. A client holds one
`requests.Session`, so give each thread its own client.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests

from app.config import Settings

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
MAX_RESPONSE_BYTES = 1024 * 1024
PAGE_LIMIT = 50
MAX_PAGES = 100
HOOK_EVENTS = (
    "pull_request_only",
    "pull_request_sync",
    "pull_request_review",
    "pull_request_comment",
)

_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_CHUNK_BYTES = 64 * 1024

Check = Callable[[Any], bool]


class GiteaError(Exception):
    """Gitea gave no usable answer; for a write the outcome is unknown."""


class GiteaUnavailable(GiteaError):
    """Connection refused or reset, DNS failure, or a timeout."""


class GiteaBadResponse(GiteaError):
    """An answer over 1 MiB, or a success whose body is not the expected JSON."""


@dataclass(frozen=True)
class GiteaResponse:
    """An HTTP answer from Gitea: status, parsed JSON (None if absent) and raw text.

    For the paged list calls `json` holds the items of every page and `text` is "".
    """

    status: int
    json: Any
    text: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def message(self) -> str:
        """Gitea's error message (`{"message": ...}`), else the start of the text."""
        if isinstance(self.json, dict) and isinstance(self.json.get("message"), str):
            return self.json["message"]
        return self.text[:500].strip()


class GiteaClient:
    """The Gitea calls the webhook process needs, on one authenticated session."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout_sec: float = 10.0,
    ):
        self._base_url = base_url.rstrip("/")
        self._timeout = timeout_sec
        self._session = requests.Session()
        # No proxies, CA bundles or .netrc credentials picked up from the environment:
        # the settings object is the only configuration.
        self._session.trust_env = False
        self._session.headers["Accept"] = "application/json"
        self._session.headers["User-Agent"] = "orket-runtime"
        if token:
            self._session.headers["Authorization"] = f"token {token}"
        elif username and password:
            self._session.auth = (username, password)
        self.has_credentials = bool(token or (username and password))

    @classmethod
    def from_settings(cls, settings: Settings) -> GiteaClient:
        return cls(
            settings.gitea_url,
            token=settings.gitea_token,
            username=settings.gitea_admin_user,
            password=settings.gitea_admin_password,
            timeout_sec=settings.gitea_timeout_sec,
        )

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> GiteaClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Comments -------------------------------------------------------------

    def create_comment(
        self, owner: str, repo: str, number: int, body: str
    ) -> GiteaResponse:
        path = f"{_repo_path(owner, repo)}/issues/{_index(number)}/comments"
        return self._checked("POST", path, {"body": body}, check=_object_with_id)

    def list_comments(self, owner: str, repo: str, number: int) -> GiteaResponse:
        """Every comment of an issue or PR, oldest first."""
        path = f"{_repo_path(owner, repo)}/issues/{_index(number)}/comments"
        return self._all_pages(path, {}, check_item=_object_with_id)

    # Pull requests ----------------------------------------------------------

    def get_pull(self, owner: str, repo: str, number: int) -> GiteaResponse:
        path = f"{_repo_path(owner, repo)}/pulls/{_index(number)}"
        return self._checked("GET", path, check=_object_with("number"))

    def close_pr(self, owner: str, repo: str, number: int) -> GiteaResponse:
        """Close a PR; Gitea answers 201 (not 200), 412 when it is already merged."""
        path = f"{_repo_path(owner, repo)}/pulls/{_index(number)}"
        return self._checked("PATCH", path, {"state": "closed"}, check=_is_object)

    def merge_pr(
        self, owner: str, repo: str, number: int, body: Mapping[str, Any]
    ) -> GiteaResponse:
        """Merge a PR; success is 200 with an empty body (201 for a scheduled merge)."""
        path = f"{_repo_path(owner, repo)}/pulls/{_index(number)}/merge"
        return self._checked("POST", path, dict(body), check=_anything)

    def merge_status(self, owner: str, repo: str, number: int) -> GiteaResponse:
        """204 when the PR is merged, 404 when it is not (or does not exist)."""
        path = f"{_repo_path(owner, repo)}/pulls/{_index(number)}/merge"
        return self._checked("GET", path, check=_anything)

    # Labels and issues ------------------------------------------------------

    def list_labels(self, owner: str, repo: str) -> GiteaResponse:
        """Every label of the repository; names are not unique, ids are."""
        path = f"{_repo_path(owner, repo)}/labels"
        return self._all_pages(path, {}, check_item=_label)

    def create_label(
        self, owner: str, repo: str, name: str, color: str, description: str = ""
    ) -> GiteaResponse:
        body = {"name": name, "color": color, "description": description}
        return self._checked(
            "POST", f"{_repo_path(owner, repo)}/labels", body, check=_label
        )

    def create_issue(
        self, owner: str, repo: str, title: str, body: str, label_ids: list[int]
    ) -> GiteaResponse:
        """Open an issue; `label_ids` must be numeric ids (names give 422)."""
        payload = {"title": title, "body": body, "labels": list(label_ids)}
        path = f"{_repo_path(owner, repo)}/issues"
        return self._checked("POST", path, payload, check=_object_with("id", "number"))

    def search_open_issues(self, owner: str, repo: str, title: str) -> GiteaResponse:
        """Open issues (not PRs) whose title is exactly `title`.

        Gitea's `q` is a keyword search, so its hits are filtered here.
        """
        params = {"state": "open", "type": "issues", "q": title}
        response = self._all_pages(
            f"{_repo_path(owner, repo)}/issues", params, check_item=_issue
        )
        if not response.ok:
            return response
        exact = [issue for issue in response.json if issue["title"] == title]
        return GiteaResponse(response.status, exact, "")

    # Webhooks ---------------------------------------------------------------

    def create_hook(
        self,
        owner: str,
        repo: str,
        url: str,
        secret: str,
        events: tuple[str, ...] = HOOK_EVENTS,
    ) -> GiteaResponse:
        """Register our webhook (OPS-2); `active` must be sent, it defaults to false."""
        body = {
            "type": "gitea",
            "config": {"url": url, "content_type": "json", "secret": secret},
            "events": list(events),
            "active": True,
        }
        path = f"{_repo_path(owner, repo)}/hooks"
        return self._checked("POST", path, body, check=_object_with_id)

    # Transport --------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> GiteaResponse:
        """One call to `path` (starting with `/api/v1/`), without any shape check."""
        if not path.startswith(API_PREFIX + "/"):
            raise ValueError(f"Gitea paths start with {API_PREFIX}/")
        response, _ = self._send(method.upper(), path, body, params)
        return response

    def _checked(
        self, method: str, path: str, body: Any = None, *, check: Check
    ) -> GiteaResponse:
        response, _ = self._send(method, path, body, None)
        if response.ok and not check(response.json):
            raise GiteaBadResponse(f"{method} {path}: unexpected response shape")
        return response

    def _all_pages(
        self, path: str, params: Mapping[str, Any], *, check_item: Check
    ) -> GiteaResponse:
        """GET every page of a list (`limit`/`page`) and join the items.

        Stops at an empty page, at `X-Total-Count`, at a short page when the total is
        not announced, or when a page repeats what we have (endpoints such as issue
        comments ignore paging and return everything at once).
        """
        items: list[Any] = []
        seen: set[int] = set()
        for page in range(1, MAX_PAGES + 1):
            query = {**params, "limit": PAGE_LIMIT, "page": page}
            response, headers = self._send("GET", path, None, query)
            if not response.ok:
                return response
            batch = response.json
            if not isinstance(batch, list) or not all(map(check_item, batch)):
                raise GiteaBadResponse(f"GET {path}: unexpected response shape")

            fresh = [item for item in batch if item["id"] not in seen]
            seen.update(item["id"] for item in fresh)
            items.extend(fresh)
            total = _total_count(headers)
            if not fresh or (total is not None and len(items) >= total):
                break
            if total is None and len(batch) < PAGE_LIMIT:
                break
        else:
            raise GiteaBadResponse(f"GET {path}: more than {MAX_PAGES} pages")
        return GiteaResponse(response.status, items, "")

    def _send(
        self,
        method: str,
        path: str,
        body: Any,
        params: Mapping[str, Any] | None,
    ) -> tuple[GiteaResponse, Mapping[str, str]]:
        # requests' timeout bounds each socket wait; the deadline bounds a slow drip.
        deadline = time.monotonic() + self._timeout
        try:
            with self._session.request(
                method,
                self._base_url + path,
                json=body,
                params=params,
                timeout=self._timeout,
                allow_redirects=method not in _WRITE_METHODS,
                stream=True,
            ) as http:
                content = _read_capped(http, deadline, f"{method} {path}")
                status, headers = http.status_code, http.headers
        except requests.RequestException as exc:
            # The exception text is left out: it repeats URLs and adds nothing an
            # operator needs beyond its kind.
            raise GiteaUnavailable(f"{method} {path}: {type(exc).__name__}") from None

        logger.debug("Gitea %s %s answered %s", method, path, status)
        text = content.decode("utf-8", errors="replace")
        return GiteaResponse(status, _json_or_none(content), text), headers


def merge_request_body(number: int, head_sha: str | None) -> dict[str, Any]:
    """The WH-8 merge body; `head_commit_id` pins the approved head when known."""
    body: dict[str, Any] = {
        "Do": "merge",
        "MergeMessageField": f"Auto-merged PR #{number} after approval",
        "delete_branch_after_merge": True,
    }
    if head_sha:
        body["head_commit_id"] = head_sha
    return body


def _read_capped(http: requests.Response, deadline: float, what: str) -> bytes:
    declared = http.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
        raise GiteaBadResponse(f"{what}: response larger than 1 MiB")

    chunks: list[bytes] = []
    size = 0
    for chunk in http.iter_content(_CHUNK_BYTES):
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise GiteaBadResponse(f"{what}: response larger than 1 MiB")
        if time.monotonic() > deadline:
            raise GiteaUnavailable(f"{what}: timed out reading the response")
        chunks.append(chunk)
    return b"".join(chunks)


def _json_or_none(content: bytes) -> Any:
    if not content.strip():
        return None
    try:
        return json.loads(content)
    except (ValueError, RecursionError):
        return None


def _total_count(headers: Mapping[str, str]) -> int | None:
    value = (headers.get("X-Total-Count") or "").strip()
    return int(value) if value.isdigit() else None


def _repo_path(owner: str, repo: str) -> str:
    """`/api/v1/repos/<owner>/<repo>` with both names as single, escaped segments."""
    for name in (owner, repo):
        if not name or name in {".", ".."}:
            raise ValueError(f"not a repository name segment: {name!r}")
    return f"{API_PREFIX}/repos/{quote(owner, safe='')}/{quote(repo, safe='')}"


def _index(number: int) -> int:
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise ValueError(f"not an issue or PR number: {number!r}")
    return number


def _anything(_: Any) -> bool:
    return True


def _is_object(value: Any) -> bool:
    return isinstance(value, dict)


def _object_with(*int_fields: str) -> Check:
    def check(value: Any) -> bool:
        return isinstance(value, dict) and all(
            isinstance(value.get(field), int) and not isinstance(value.get(field), bool)
            for field in int_fields
        )

    return check


_object_with_id = _object_with("id")


def _label(value: Any) -> bool:
    return _object_with_id(value) and isinstance(value.get("name"), str)


def _issue(value: Any) -> bool:
    return _object_with("id", "number")(value) and isinstance(value.get("title"), str)
