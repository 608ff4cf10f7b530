"""OpenAI-compatible endpoints (teacher for generate, judge for eval) behind a privacy guard.

A URL whose host is not this machine or a private network is refused before any connection is
opened (no DNS lookup either: a name is judged by its form), unless the user passed the flag that
allows it. API keys are read from the environment at call time and never stored or logged.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from privtune.errors import PrivtuneError

PRIVATE_SUFFIXES = (".local", ".internal", ".localhost", ".lan", ".home.arpa")
DEFAULT_KEY_ENVS = ("PRIVTUNE_API_KEY", "OPENAI_API_KEY")
PRIVATE_NETWORKS = {
    "127.0.0.0/8": "loopback", "::1/128": "loopback",
    "10.0.0.0/8": "private (RFC 1918)", "172.16.0.0/12": "private (RFC 1918)",
    "192.168.0.0/16": "private (RFC 1918)",
    "169.254.0.0/16": "link-local", "fe80::/10": "link-local",
    "fc00::/7": "unique-local (RFC 4193)",
}
"""The networks that are this machine or a private network, listed rather than taken from
`ipaddress.is_private`, which also covers documentation, benchmarking and reserved ranges
(192.0.2.0/24, 198.18.0.0/15, 240.0.0.0/4, 2001:db8::/32, ...) that can route off the machine."""
EXTRA_NETWORKS_ENV = "PRIVTUNE_PRIVATE_NETWORKS"
"""Comma-separated CIDR ranges a user adds to the list, e.g. a VPN's 100.64.0.0/10."""


def private_networks() -> list:
    """PRIVATE_NETWORKS plus the user's own ranges from PRIVTUNE_PRIVATE_NETWORKS (checked)."""
    extra = [n.strip() for n in os.environ.get(EXTRA_NETWORKS_ENV, "").split(",") if n.strip()]
    networks = []
    for text in [*PRIVATE_NETWORKS, *extra]:
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise PrivtuneError(f"not a network: '{text}'", field=EXTRA_NETWORKS_ENV,
                                hint="comma-separated CIDR ranges, e.g. 100.64.0.0/10,fd7a:115c:a1e0::/48") from None
    return networks


def is_private_host(host: str) -> bool:
    """An address in a listed private network (IPv4-mapped IPv6 judged as its IPv4), or a local-looking name."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(PRIVATE_SUFFIXES):
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])  # fe80::1%eth0: the zone is not the address
    except ValueError:
        return False  # a public-looking name (or nothing): judged without resolving it
    mapped = getattr(address, "ipv4_mapped", None)
    address = mapped or address
    return any(address in network for network in private_networks() if network.version == address.version)


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
    def public_url(self) -> str:
        """The URL without credentials, for everything written or printed: `user:pass@` and the query
        string (where some servers take `?key=`) are masked."""
        parts = urlsplit(self.base_url)
        netloc = parts.netloc.rpartition("@")[2]
        return urlunsplit((parts.scheme, ("***@" if "@" in parts.netloc else "") + netloc, parts.path,
                           "***" if parts.query else "", ""))

    @property
    def host(self) -> str:
        parts = urlsplit(self.base_url)
        return parts.hostname or ""

    def check(self, flag: str = "--allow-remote") -> None:
        """Refuse a non-local host unless allowed; call before creating any client."""
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https"):
            raise PrivtuneError(f"not an http(s) URL: {self.public_url}", field=self.url_flag,
                                hint="e.g. http://127.0.0.1:8000/v1 (unix sockets are not supported)")
        if not parts.hostname:
            raise PrivtuneError(f"no host in the URL: {self.public_url}", field=self.url_flag,
                                hint="e.g. http://127.0.0.1:8000/v1")
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
        """`text` with the API key and the URL's credentials masked: for error messages that echo a request."""
        parts = urlsplit(self.base_url)
        secrets = [self.api_key(), parts.netloc.rpartition("@")[0], parts.query, parts.password or ""]
        for secret in sorted((s for s in secrets if s and s != "not-needed" and len(s) > 3), key=len, reverse=True):
            text = text.replace(secret, "***")
        return text

    def async_client(self, concurrency: int, lean: bool = False, on_send=None):
        """An AsyncOpenAI client whose connection pool holds `concurrency` connections, or privtune's
        lean client (same errors, retries and result types; `await client.create(**params)`).
        `on_send(size)` is called just before each HTTP request leaves, retries included."""
        self.check()
        if lean:
            from privtune.lean_client import LeanChatClient

            if "@" in urlsplit(self.base_url).netloc:  # aiohttp refuses URL credentials beside a Bearer key
                raise PrivtuneError(f"credentials in the URL ({self.public_url}) are not supported by the lean "
                                    "client", field=self.url_flag, hint="put the key in an environment variable "
                                    "(--api-key-env), or pass --set client=openai")

            return LeanChatClient(self.base_url, self.api_key(), timeout=self.timeout, max_retries=self.max_retries,
                                  concurrency=concurrency, on_send=on_send)
        import httpx2
        from openai import AsyncOpenAI, DefaultAsyncHttpxClient

        async def sending(request):
            on_send(len(request.content))

        limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        hooks = {"request": [sending]} if on_send else {}
        return AsyncOpenAI(base_url=self.base_url, api_key=self.api_key(), timeout=self.timeout,
                           max_retries=self.max_retries,
                           http_client=DefaultAsyncHttpxClient(limits=limits, event_hooks=hooks))

    def client(self):
        from openai import OpenAI

        self.check()
        return OpenAI(base_url=self.base_url, api_key=self.api_key(), timeout=self.timeout,
                      max_retries=self.max_retries)

    def describe(self) -> dict:
        """For manifests: where, which model, which key variable (never the key)."""
        return {"host": self.host, "base_url": self.public_url, "model": self.model, "api_key_env": self.api_key_env,
                "allow_remote": self.allow_remote}
