"""Which network addresses a web fetch may connect to, and how odd host spellings are read.

A model controls the URL, so every address a hostname stands for is judged here before any socket opens. The
rule is an allow-list of the public internet (`is_global`) minus the special ranges that `ipaddress` still
counts as global, with IPv6 forms that carry an IPv4 address inside (mapped, 6to4, Teredo, NAT64) judged by
the IPv4 address they lead to. Hosts written as odd IPv4 literals (`2130706433`, `0x7f000001`, `0177.0.0.1`,
`127.1`) are read the way the C library's `inet_aton` reads them: that is what the OS would connect to.
"""

from __future__ import annotations

import ipaddress
import re

__all__ = ["IPAddress", "parse_ip_literal", "refusal_reason"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_ULA = ipaddress.ip_network("fc00::/7")
_IPV6_LINK_LOCAL = ipaddress.ip_network("fe80::/10")
_IPV6_SITE_LOCAL = ipaddress.ip_network("fec0::/10")
_METADATA = ipaddress.ip_address("169.254.169.254")
_PART = re.compile(r"^(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$")


def _inet_aton(host: str) -> ipaddress.IPv4Address | None:
    """Parse `host` as `inet_aton` would: 1-4 parts, decimal, 0x-hex or 0-octal; the last fills the rest."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or not all(_PART.match(p) for p in parts):
        return None
    if any(len(p.lstrip("0xX")) > 12 for p in parts):
        # Beyond 32 bits in any base, so not an address (inet_aton says the same); and int() refuses decimal
        # strings over 4,300 digits with a ValueError that must not escape a fetch.
        return None
    values: list[int] = []
    for p in parts:
        if p[:2] in ("0x", "0X"):
            values.append(int(p[2:], 16))
        elif len(p) > 1 and p[0] == "0":
            values.append(int(p, 8))
        else:
            values.append(int(p))
    *head, last = values
    if any(v > 0xFF for v in head) or last >= 1 << (8 * (4 - len(head))):
        return None
    number = 0
    for v in head:
        number = number << 8 | v
    number = number << (8 * (4 - len(head))) | last
    return ipaddress.IPv4Address(number)


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address `host` spells if it is an IP literal in any form the OS accepts, else None (a name).

    IPv6 may come with or without brackets and with a zone (`fe80::1%eth0`); a trailing dot on an IPv4 form is
    ignored, as resolvers ignore it.
    """
    h = host.strip().removeprefix("[").removesuffix("]")
    if ":" in h:
        try:
            return ipaddress.IPv6Address(h)
        except ValueError:
            return None
    return _inet_aton(h.removesuffix("."))


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address routes to, for the forms that carry one."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if any(ip in net for net in _NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _refusal_kind(ip: IPAddress) -> tuple[str, ipaddress.IPv4Address | None] | None:
    """Which kind of non-public address `ip` is (a template's `kind`), with the IPv4 address an IPv6 form
    leads to; None for a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return "scoped", None
        inner = _embedded_ipv4(ip)
        if inner is not None:
            return ("ipv6_form", inner) if _refusal_kind(inner) is not None else None
        if ip in _ULA:
            return "unique_local", None
        if ip in _IPV6_LINK_LOCAL or ip in _IPV6_SITE_LOCAL:
            return "ipv6_link_local", None
    checks: tuple[tuple[str, bool], ...] = (
        ("metadata", ip == _METADATA),
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link_local", ip.is_link_local),
        ("cgnat", isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
        ("special", not ip.is_global),
    )
    for kind, applies in checks:
        if applies:
            return kind, None
    return None


def refusal_reason(ip: IPAddress) -> str | None:
    """Why a fetch must not connect to `ip` (a few words for a sentence), or None for a public address."""
    found = _refusal_kind(ip)
    if found is None:
        return None
    from prompts.templating import render_tool_text

    kind, inner = found
    inner_reason = refusal_reason(inner) if inner is not None else None
    return render_tool_text("web/address_kind", kind=kind, inner=inner, inner_reason=inner_reason)
