"""Address checks of `tools.web`: which addresses are refused, and how odd IPv4 spellings are read.

No network here: these are the pure functions the fetch relies on before it opens any socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import unittest.mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tools.web_addresses import parse_ip_literal, refusal_reason

REFUSED = [
    "127.0.0.1",
    "127.255.255.254",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "169.254.0.1",
    "100.64.0.1",  # carrier-grade NAT
    "100.127.255.254",
    "0.0.0.0",
    "0.1.2.3",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "192.0.0.1",
    "198.18.0.1",
    "::1",
    "::",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "fe80::1%eth0",
    "ff02::1",
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
]
ALLOWED = [
    "8.8.8.8",
    "93.184.216.34",
    "1.1.1.1",
    "2606:4700:4700::1111",
    "2a00:1450:4001:81c::200e",
    "64:ff9b::808:808",
]


@pytest.mark.parametrize("text", REFUSED)
def test_special_addresses_are_refused(text: str) -> None:
    ip = parse_ip_literal(text)
    assert ip is not None
    assert refusal_reason(ip) is not None


@pytest.mark.parametrize("text", ALLOWED)
def test_public_addresses_are_allowed(text: str) -> None:
    ip = parse_ip_literal(text)
    assert ip is not None
    assert refusal_reason(ip) is None


def test_reasons_name_what_the_address_is() -> None:
    assert "metadata" in (refusal_reason(ipaddress.ip_address("169.254.169.254")) or "")
    assert "loopback" in (refusal_reason(ipaddress.ip_address("::ffff:127.0.0.1")) or "")
    assert "carrier-grade" in (refusal_reason(ipaddress.ip_address("100.64.1.1")) or "")
    assert "unique-local" in (refusal_reason(ipaddress.ip_address("fd00::5")) or "")


@pytest.mark.parametrize(
    ("host", "meant"),
    [
        ("2130706433", "127.0.0.1"),  # decimal
        ("0x7f000001", "127.0.0.1"),  # hexadecimal
        ("0X7F000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),  # octal
        ("0177.0.0.01", "127.0.0.1"),
        ("127.1", "127.0.0.1"),  # short forms
        ("127.0.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("10.1", "10.0.0.1"),
        ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254"),
        ("0251.0376.0251.0376", "169.254.169.254"),
        ("2852039166", "169.254.169.254"),
        ("0", "0.0.0.0"),
        ("127.0.0.1.", "127.0.0.1"),  # trailing dot, as resolvers ignore it
        ("[::1]", "::1"),
        ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1"),
    ],
)
def test_odd_ip_literals_mean_what_the_os_reads(host: str, meant: str) -> None:
    assert parse_ip_literal(host) == ipaddress.ip_address(meant)


@pytest.mark.parametrize(
    "host", ["example.com", "08.0.0.1", "1.2.3.4.5", "256.1.1.1", "0x1g", "1..1", "", "a.1"]
)
def test_names_and_invalid_forms_are_not_ip_literals(host: str) -> None:
    assert parse_ip_literal(host) is None


@given(st.text(alphabet="0123456789xXabcdefABCDEF.", min_size=1, max_size=24))
def test_ipv4_parsing_agrees_with_the_c_library(host: str) -> None:
    """Whatever `inet_aton` (what the OS resolver uses for numeric hosts) accepts, we read the same way."""
    try:
        expected = ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        expected = None
    got = parse_ip_literal(host)
    if host.endswith(".") and expected is None:
        return  # we also accept one trailing dot, which resolvers strip before inet_aton sees the name
    assert got == expected


# --- hostile input: whatever the URL and the DNS answers, only checked public addresses are ever dialled -----

_ADDRESS_POOL = [
    "8.8.8.8",
    "93.184.216.34",
    "2606:4700:4700::1111",
    "127.0.0.1",
    "10.1.2.3",
    "169.254.169.254",
    "100.64.3.4",
    "192.168.0.10",
    "::1",
    "::ffff:127.0.0.1",
    "fd00::7",
    "fe80::1%eth0",
    "0.0.0.0",
    "224.0.0.251",
    "2002:a00:1::1",
    "64:ff9b::a9fe:a9fe",
]


def _spellings(number: int) -> list[str]:
    octets = number.to_bytes(4, "big")
    return [
        str(number),
        hex(number),
        "0" + oct(number)[2:],
        ".".join(str(o) for o in octets),
        ".".join(f"0x{o:x}" for o in octets),
        f"{octets[0]}.{int.from_bytes(octets[1:], 'big')}",
        f"{octets[0]}.{octets[1]}.{int.from_bytes(octets[2:], 'big')}",
        "[::ffff:" + ".".join(str(o) for o in octets) + "]",
    ]


@st.composite
def hosts(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["literal", "name", "pool"]))
    if kind == "literal":
        number = draw(
            st.one_of(
                st.integers(0, 2**32 - 1),
                st.sampled_from([0x7F000001, 0x0A000001, 0xA9FEA9FE, 0x64400001, 0xC0A80001, 0]),
            )
        )
        return draw(st.sampled_from(_spellings(number)))
    if kind == "pool":
        text = draw(st.sampled_from(_ADDRESS_POOL)).replace("%", "%25")
        return f"[{text}]" if ":" in text else text
    return draw(st.sampled_from(["example.org", "localhost", "a.localhost", "LocalHost.", "intranet.corp"]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    host=hosts(),
    answers=st.lists(st.sampled_from(_ADDRESS_POOL), min_size=1, max_size=3),
    https=st.booleans(),
)
def test_only_checked_public_addresses_are_ever_dialled(host: str, answers: list[str], https: bool) -> None:
    """The connection guard here never connects: it records the address and fails the attempt."""
    import httpcore

    from tools import web

    dialled: list[str] = []

    async def guard(backend: object, ip: str, *args: object) -> object:
        dialled.append(ip)
        raise httpcore.ConnectError("test guard: no connection is ever made")

    async def resolver(name: str, port: int) -> list[str]:
        return answers

    async def attempt() -> None:
        with contextlib.suppress(web.FetchError):
            await web.fetch(f"{'https' if https else 'http'}://{host}/path", resolver=resolver, timeout=5)

    with unittest.mock.patch.object(web, "_open_tcp", guard):
        asyncio.run(attempt())
    for ip in dialled:
        assert refusal_reason(ipaddress.ip_address(ip)) is None, (host, answers, dialled)
