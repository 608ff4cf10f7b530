"""OpenAI-compatible endpoints (teacher for generate, judge for eval) behind a privacy guard.

A URL whose host is not this machine or a private network is refused before any connection is
opened (no DNS lookup either: a name is judged by its form), unless the user passed the flag that
allows it. API keys are read from the environment at call time and never stored or logged.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from privtune.errors import PrivtuneError

PRIVATE_SUFFIXES = (".local", ".internal", ".localhost", ".lan", ".home.arpa")
DEFAULT_KEY_ENVS = ("PRIVTUNE_API_KEY", "OPENAI_API_KEY")


def is_private_host(host: str) -> bool:
    """Loopback, RFC 1918, link-local, unique-local, or a local-looking name."""
    host = host.strip("[]").lower()
    if host in ("localhost", "") or host.endswith(PRIVATE_SUFFIXES):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a public-looking name: judged without resolving it
    return address.is_loopback or address.is_private or address.is_link_local


@dataclass
class Endpoint:
    """Where requests go and how: never holds the key itself, only the variable it is read from."""

    base_url: str
    model: str
    api_key_env: str | None = None
    timeout: float = 120.0
    max_retries: int = 4
    allow_remote: bool = False
    url_flag: str = "--teacher-url"

    @property
    def host(self) -> str:
        parts = urlsplit(self.base_url)
        return parts.hostname or parts.path  # unix sockets come as paths

    def check(self, flag: str = "--allow-remote") -> None:
        """Refuse a non-local host unless allowed; call before creating any client."""
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https", "unix", "http+unix"):
            raise PrivtuneError(f"not an http(s) URL: {self.base_url}", field=self.url_flag,
                                hint="e.g. http://127.0.0.1:8000/v1")
        if parts.scheme.endswith("unix"):
            return
        if not is_private_host(self.host) and not self.allow_remote:
            raise PrivtuneError(f"{self.host} is not on this machine or a private network; nothing was sent",
                                field=self.url_flag, hint=f"pass {flag} if this data may leave the machine")

    def api_key(self) -> str:
        names = (self.api_key_env,) if self.api_key_env else DEFAULT_KEY_ENVS
        for name in names:
            if os.environ.get(name):
                return os.environ[name]
        if self.api_key_env:
            raise PrivtuneError(f"environment variable {self.api_key_env} is not set", field="--api-key-env")
        return "not-needed"  # local servers (vLLM, Ollama, privtune serve) accept any key

    def redact(self, text: str) -> str:
        """`text` with the API key masked: for error messages that echo a request."""
        key = self.api_key()
        return text.replace(key, "***") if key and key != "not-needed" and len(key) > 3 else text

    def async_client(self, concurrency: int, lean: bool = False):
        """An AsyncOpenAI client whose connection pool holds `concurrency` connections, or privtune's
        lean client (same errors, retries and result types; `await client.create(**params)`)."""
        self.check()
        if lean:
            from privtune.lean_client import LeanChatClient

            return LeanChatClient(self.base_url, self.api_key(), timeout=self.timeout, max_retries=self.max_retries,
                                  concurrency=concurrency)
        import httpx2
        from openai import AsyncOpenAI, DefaultAsyncHttpxClient

        limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        return AsyncOpenAI(base_url=self.base_url, api_key=self.api_key(), timeout=self.timeout,
                           max_retries=self.max_retries, http_client=DefaultAsyncHttpxClient(limits=limits))

    def client(self):
        from openai import OpenAI

        self.check()
        return OpenAI(base_url=self.base_url, api_key=self.api_key(), timeout=self.timeout,
                      max_retries=self.max_retries)

    def describe(self) -> dict:
        """For manifests: where, which model, which key variable (never the key)."""
        return {"host": self.host, "base_url": self.base_url, "model": self.model, "api_key_env": self.api_key_env,
                "allow_remote": self.allow_remote}
