"""The privacy guard: an explicit list of networks that are this machine or a private network.

Every refused address is refused by `Endpoint.check`, which generate and eval call before creating
any client; the last test shows for each range that generate opens no socket and looks nothing up.
"""

import socket

import pytest

from privtune.endpoint import EXTRA_NETWORKS_ENV, PRIVATE_NETWORKS, Endpoint, is_private_host
from privtune.errors import PrivtuneError

ALLOWED = {  # one address inside each listed network, edges included
    "127.0.0.0/8": ["127.0.0.1", "127.255.255.254"], "::1/128": ["::1", "[::1]"],
    "10.0.0.0/8": ["10.0.0.1", "10.255.255.255"], "172.16.0.0/12": ["172.16.0.1", "172.31.255.254"],
    "192.168.0.0/16": ["192.168.1.10"], "169.254.0.0/16": ["169.254.10.20"],
    "fe80::/10": ["fe80::1", "fe80::1%eth0"], "fc00::/7": ["fd12:3456::1", "fc00::1"],
}
REFUSED = {
    "documentation (TEST-NET-1, RFC 5737)": "192.0.2.10", "documentation (TEST-NET-2)": "198.51.100.7",
    "documentation (TEST-NET-3)": "203.0.113.9", "benchmarking (RFC 2544)": "198.18.0.1",
    "reserved (240.0.0.0/4)": "240.0.0.1", "IPv6 documentation (2001:db8::/32)": "2001:db8::1",
    "unspecified": "0.0.0.0", "carrier-grade NAT (not listed by default)": "100.64.0.1",
    "just past 172.16.0.0/12": "172.32.0.1", "just past 192.168.0.0/16": "192.169.0.1",
    "public": "8.8.8.8", "public IPv6": "2606:4700::1111", "IPv4-mapped public": "::ffff:8.8.8.8",
    "a public-looking name": "api.example.com", "no host": "",
}


def test_every_listed_network_is_tested():
    assert set(ALLOWED) == set(PRIVATE_NETWORKS)


@pytest.mark.parametrize("network, host", [(n, h) for n, hosts in ALLOWED.items() for h in hosts])
def test_listed_networks_are_private(network, host):
    assert is_private_host(host), network


@pytest.mark.parametrize("kind, host", list(REFUSED.items()), ids=list(REFUSED))
def test_other_ranges_are_refused(kind, host):
    assert not is_private_host(host), kind


def test_mapped_loopback_and_local_names_are_private():
    assert is_private_host("::ffff:127.0.0.1") and is_private_host("localhost")
    assert is_private_host("gpu-box.local") and is_private_host("teacher.internal")


def test_users_add_their_own_ranges_and_bad_ones_are_named(monkeypatch):
    monkeypatch.setenv(EXTRA_NETWORKS_ENV, "100.64.0.0/10, fd7a:115c:a1e0::/48")
    assert is_private_host("100.101.102.103") and is_private_host("fd7a:115c:a1e0::5")
    assert not is_private_host("203.0.113.9")
    monkeypatch.setenv(EXTRA_NETWORKS_ENV, "100.64.0.0/10,not-a-network")
    with pytest.raises(PrivtuneError) as error:
        is_private_host("100.64.0.1")
    assert error.value.field == EXTRA_NETWORKS_ENV and "not-a-network" in str(error.value)


@pytest.mark.parametrize("url", ["unix:///run/teacher.sock", "http+unix://%2Frun%2Fteacher.sock/v1",
                                 "ftp://127.0.0.1/v1", "file:///etc/passwd", "http:///v1"])
def test_other_schemes_and_hostless_urls_are_refused(url):
    with pytest.raises(PrivtuneError) as error:
        Endpoint(url, "m").check()
    assert error.value.field == "--teacher-url"


@pytest.mark.parametrize("kind, host", [(k, h) for k, h in REFUSED.items() if h], ids=[k for k, h in REFUSED.items() if h])
def test_generate_sends_nothing_to_a_refused_address(kind, host, tiny_model, workspace, monkeypatch):
    """Through the stage itself: refused before any connection or name lookup."""
    from privtune.generate import stage
    from tests.generate.test_generate import SEEDS, config

    opened = []
    monkeypatch.setattr(socket.socket, "connect", lambda self, address: opened.append(address))
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: opened.append(args) or [])
    bracketed = f"[{host}]" if ":" in host else host
    with pytest.raises(PrivtuneError) as error:
        stage.run(Endpoint(f"http://{bracketed}:8000/v1", "m"), str(tiny_model), config(), workspace, seeds=SEEDS)
    assert "--allow-remote" in str(error.value) and opened == [] and workspace.artifacts() == []


def test_credentials_in_the_url_are_never_written_or_printed(tiny_model, workspace, monkeypatch, capsys):
    """userinfo and query-string secrets: masked in the manifest's teacher record, --dry-run and errors."""
    from privtune.generate import stage
    from tests.generate.test_generate import SEEDS, config

    url = "http://alice:s3cret-pass@127.0.0.1:9/v1?api-key=q-secret-token"
    endpoint = Endpoint(url, "m")
    assert endpoint.public_url == "http://***@127.0.0.1:9/v1?***"
    assert endpoint.describe()["base_url"] == endpoint.public_url
    message = endpoint.redact(f"500 from {url}: bad auth alice:s3cret-pass")
    assert "s3cret-pass" not in message and "q-secret-token" not in message
    source = stage.load_source(SEEDS, None, config())
    shown = stage.dry_run(endpoint, source, config(), stage.template_text(config(), source.mode), False)
    assert "s3cret" not in shown and "q-secret-token" not in shown and "127.0.0.1:9/v1" in shown
    with pytest.raises(PrivtuneError) as error:
        Endpoint("ftp://alice:s3cret-pass@127.0.0.1/v1", "m").check()
    assert "s3cret" not in str(error.value)


def test_a_run_with_credentials_in_the_url_writes_them_nowhere(tiny_model, workspace):
    """The openai client takes such a URL; the lean one refuses it by name (aiohttp cannot send both)."""
    from privtune.generate import stage
    from tests.fake_teacher import FakeTeacher
    from tests.generate.test_generate import SEEDS, config

    with FakeTeacher() as teacher:
        url = teacher.url.replace("http://", "http://alice:s3cret-pass@")
        with pytest.raises(PrivtuneError) as error:
            stage.run(Endpoint(url, teacher.model, timeout=10), str(tiny_model), config(num=10), workspace,
                      seeds=SEEDS)
        assert "client=openai" in str(error.value) and "s3cret" not in str(error.value)
        artifact, _ = stage.run(Endpoint(url, teacher.model, timeout=10), str(tiny_model),
                                config(num=10, client="openai"), workspace, seeds=SEEDS)
    assert artifact.manifest["teacher"]["base_url"].startswith("http://***@127.0.0.1:")
    files = [p for p in workspace.root.rglob("*") if p.is_file()]
    assert files and not [p for p in files if b"s3cret-pass" in p.read_bytes()]
