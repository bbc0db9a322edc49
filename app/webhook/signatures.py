"""Webhook signatures (SPEC WH-2): which bytes are signed and whether a signature fits.

Gitea and Forgejo sign the JSON payload with HMAC-SHA256 and send the lowercase hex
digest in several headers at once. For form-encoded hooks they still sign the inner
JSON, not the form body, which is the opposite of GitHub; `signed_bytes` hides that.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import parse_qs

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"

# Searched in this order; the first non-empty value wins.
SIGNATURE_HEADERS = ("X-Forgejo-Signature", "X-Gitea-Signature", "X-Hub-Signature-256")

_HUB_PREFIX = "sha256="


class MalformedFormBody(ValueError):
    """A form-encoded delivery without exactly one UTF-8 `payload` field."""


def signed_bytes(raw_body: bytes, content_type: str | None) -> bytes:
    """The bytes the sender signed: the raw body, or the form's `payload` field."""
    if _mimetype(content_type) != FORM_CONTENT_TYPE:
        return raw_body

    try:
        fields = parse_qs(
            raw_body.decode("utf-8"), keep_blank_values=True, errors="strict"
        )
    except UnicodeDecodeError:
        raise MalformedFormBody("form body is not valid URL-encoded UTF-8") from None

    payloads = fields.get("payload", [])
    if len(payloads) != 1:
        raise MalformedFormBody("form body needs exactly one 'payload' field")
    return payloads[0].encode("utf-8")


def given_signature(headers: Mapping[str, str]) -> str | None:
    """The signature the sender claims, or None when every signature header is empty.

    `headers` should look names up case-insensitively, as Flask's request headers do.
    A hook saved without a secret still sends the headers, empty or as a bare
    `sha256=`, so presence alone proves nothing.
    """
    for name in SIGNATURE_HEADERS:
        value = (headers.get(name) or "").strip()
        if name == "X-Hub-Signature-256":
            value = _without_hub_prefix(value)
        if value:
            return value
    return None


def compute_signature(secret: str, body: bytes) -> str:
    """Lowercase hex HMAC-SHA256 of `body`, as Gitea computes it."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify_signature(secrets: tuple[str, ...], body: bytes, given: str) -> bool:
    """True when `given` is the signature of `body` under any of `secrets`.

    Every secret is compared, in constant time, so the answer's timing reveals
    neither the expected digest nor which secret (current or previous) matched.
    """
    candidate = given.strip().lower().encode("utf-8")
    if not candidate:
        return False

    matched = False
    for secret in secrets:
        if not secret:
            continue
        expected = compute_signature(secret, body).encode("ascii")
        matched |= hmac.compare_digest(expected, candidate)
    return matched


def _without_hub_prefix(value: str) -> str:
    if value[: len(_HUB_PREFIX)].lower() == _HUB_PREFIX:
        return value[len(_HUB_PREFIX) :].strip()
    return value


def _mimetype(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()
