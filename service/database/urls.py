"""PostgreSQL URLs with one host or several (libpq's `a:5432,b:5432` form)."""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import urlsplit


class _Parts(NamedTuple):
    scheme: str
    user: str  # with its '@', or empty
    hosts: list[str]
    path: str  # from the '/' on: database and options


def _parts(url: str) -> _Parts:
    scheme, _, rest = url.partition("://")
    netloc, slash, tail = rest.partition("/")
    user, at, hosts = netloc.rpartition("@")
    return _Parts(scheme, user + at, hosts.split(","), slash + tail)


def split_hosts(url: str) -> list[str]:
    """One single-host URL per host of `url`."""
    parts = _parts(url)
    return [f"{parts.scheme}://{parts.user}{host}{parts.path}" for host in parts.hosts]


def with_host(url: str, host: str, port: int | str) -> str:
    """`url` naming only this host."""
    parts = _parts(url)
    address = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{parts.user}{address}:{port}{parts.path}"


def has_several_hosts(url: str) -> bool:
    return len(_parts(url).hosts) > 1


def server_label(url: str) -> str:
    """`host:port` of a single-host URL (the socket folder for a unix socket), for logs
    and metric labels: never the user name or password."""
    parts = urlsplit(url)
    if parts.hostname:
        return f"{parts.hostname}:{parts.port or 5432}"
    for option in parts.query.split("&"):
        if option.startswith("host="):
            return option.removeprefix("host=")
    return "localhost"
