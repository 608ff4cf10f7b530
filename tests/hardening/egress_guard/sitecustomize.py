"""Loaded at start-up by every Python process of a guarded run (PYTHONPATH): only loopback and unix
sockets may connect; any other connection or name lookup is refused and written to a log."""

import atexit
import ipaddress
import os
import socket

LOG = os.environ["PRIVTUNE_EGRESS_LOG"]
LOCAL_NAMES = {"localhost", "ip6-localhost", "", None}


def _record(line: str) -> None:
    with open(LOG, "a", encoding="utf-8") as handle:
        handle.write(f"{os.getpid()} {line}\n")


def _is_local(host) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    if host in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def _allowed(sock, address) -> bool:
    return sock.family == socket.AF_UNIX or _is_local(address[0])


def _guard(method):
    def guarded(self, address, *args):
        if not _allowed(self, address):
            _record(f"{method.__name__} {address!r}")
            raise ConnectionRefusedError(f"egress guard: {address!r} is not loopback")
        return method(self, address, *args)
    return guarded


socket.socket.connect = _guard(socket.socket.connect)
socket.socket.connect_ex = _guard(socket.socket.connect_ex)
_sendto = socket.socket.sendto


def _guarded_sendto(self, data, *rest):
    address = rest[-1]
    if not _allowed(self, address):
        _record(f"sendto {address!r}")
        raise ConnectionRefusedError(f"egress guard: {address!r} is not loopback")
    return _sendto(self, data, *rest)


socket.socket.sendto = _guarded_sendto
_getaddrinfo = socket.getaddrinfo


def _guarded_getaddrinfo(host, *args, **kwargs):
    if not _is_local(host):
        _record(f"getaddrinfo {host!r}")
        raise socket.gaierror(socket.EAI_NONAME, f"egress guard: no lookups of {host!r}")
    return _getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _guarded_getaddrinfo


@atexit.register
def _privacy_settings() -> None:
    import sys

    settings = {k: os.environ.get(k) for k in ("HF_HUB_DISABLE_TELEMETRY", "WANDB_MODE", "DO_NOT_TRACK")}
    settings["argv"] = sys.argv[1:2]
    with open(LOG + ".env", "a", encoding="utf-8") as handle:
        handle.write(f"{settings}\n")
