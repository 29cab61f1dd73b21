"""Where a webhook may point: not at this machine or its private network.

A webhook is a request the platform makes on an administrator's behalf; pointed at
``http://169.254.169.254/`` (cloud metadata), ``127.0.0.1`` or the database's host
it would turn the alert sender into a proxy into the private network (server-side
request forgery). Such destinations are refused unless
``alerts.webhook_private_destinations`` allows them (the demo and the tests, whose
receivers run on this machine). The API checks a webhook when it is created, the
sender again before every delivery: a name may resolve elsewhere by then.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

__all__ = ["Resolve", "private_destination"]


def _private(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_global or address.is_multicast


# host -> the addresses it resolves to (socket.getaddrinfo's answers, in the callers:
# core does no network I/O of its own). OSError or UnicodeError when it does not.
Resolve = Callable[[str], Iterable[str]]


def private_destination(url: str, resolve: Resolve) -> str | None:
    """Why ``url`` may not be a webhook's destination, or None if it may."""
    host = urlsplit(url).hostname
    if not host:
        return "the URL has no host"
    try:
        return f"{host} is not a public address" if _private(ipaddress.ip_address(host)) else None
    except ValueError:
        pass  # a name: what it resolves to decides
    try:
        addresses = list(resolve(host))
    except (OSError, UnicodeError):
        return f"{host} does not resolve"
    for text in addresses:
        address = ipaddress.ip_address(text.split("%")[0])
        if _private(address):
            return f"{host} resolves to {address}, which is not a public address"
    return None
