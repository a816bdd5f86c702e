"""Secrets never reach a log file, a report or a failure message: values of HF_TOKEN and every *_TOKEN / *_KEY /
*_SECRET variable are replaced, and so are strings shaped like a credential wherever they came from (a server
echoing the token it read from its own config file, an error body quoting the bearer token it refused)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

SECRET_NAME = re.compile(r"(^HF_TOKEN$|^HUGGING_FACE_HUB_TOKEN$|_TOKEN$|_KEY$|_SECRET$|^TOKEN$|PASSWORD$)", re.IGNORECASE)
MIN_SECRET_LENGTH = 6  # shorter values ("1", "true") would blank out ordinary text
REDACTED = "***"

# Credentials recognisable by their form. Group "keep" is a label left in place so the message still reads.
TOKEN_SHAPED = re.compile(
    "|".join((
        r"\bhf_[A-Za-z0-9]{16,}",  # Hugging Face user and org tokens
        r"\bapi_org_[A-Za-z0-9]{16,}",
        r"\bsk-[A-Za-z0-9_\-]{16,}",  # OpenAI-style API keys (sk-..., sk-proj-...)
        r"\bgh[pousr]_[A-Za-z0-9]{20,}",  # GitHub tokens
        r"\bgithub_pat_[A-Za-z0-9_]{20,}",
        r"\bxox[abposr]-[A-Za-z0-9\-]{10,}",  # Slack
        r"\bAKIA[0-9A-Z]{16}\b",  # AWS access key ids
        r"(?P<bearer>\bBearer\s+)[A-Za-z0-9._~+/=\-]{12,}",
        # "token": "...", api_key=..., ?access_token=... : the value after a name that says it is a secret
        r"(?P<named>(?:\b|_)(?:token|api[_-]?key|secret|password)[\"']?\s*[:=]\s*[\"']?)[^\s\"'&,;}]{12,}",
    )),
    re.IGNORECASE,
)


def secret_values(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The secret values of ``env`` (this process's environment by default), longest first."""
    env = os.environ if env is None else env
    values = {value for name, value in env.items() if SECRET_NAME.search(name) and len(value) >= MIN_SECRET_LENGTH}
    return tuple(sorted(values, key=len, reverse=True))  # longest first: a secret containing another


def _mask(match: re.Match[str]) -> str:
    return (match.group("bearer") or match.group("named") or "") + REDACTED


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every value of ``secrets`` and every credential-shaped string replaced by ***."""
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return TOKEN_SHAPED.sub(_mask, text)
