"""Secrets never reach a log file or a report: values of HF_TOKEN and every *_TOKEN / *_KEY / *_SECRET
variable are replaced before anything is written."""

from __future__ import annotations

import re
from collections.abc import Mapping

SECRET_NAME = re.compile(r"(^HF_TOKEN$|^HUGGING_FACE_HUB_TOKEN$|_TOKEN$|_KEY$|_SECRET$|^TOKEN$|PASSWORD$)", re.IGNORECASE)
MIN_SECRET_LENGTH = 6  # shorter values ("1", "true") would blank out ordinary text
REDACTED = "***"


def secret_values(env: Mapping[str, str]) -> tuple[str, ...]:
    values = {value for name, value in env.items() if SECRET_NAME.search(name) and len(value) >= MIN_SECRET_LENGTH}
    return tuple(sorted(values, key=len, reverse=True))  # longest first: a secret containing another


def redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text
