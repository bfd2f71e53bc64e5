"""The SSRF guard: which push endpoints we refuse, with a resolver we control."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from push.endpoints import EndpointRefused, check_endpoint, refused_address


def resolver(*addresses: str):  # type: ignore[no-untyped-def]
    def resolve(host: str, port: int) -> list[str]:
        return list(addresses)

    return resolve


PUBLIC = ("203.0.113.0", "8.8.8.8", "2001:4860:4860::8888", "1.1.1.1")
NOT_PUBLIC = (
    "127.0.0.1", "127.8.9.10", "::1", "10.0.0.1", "172.16.5.4", "192.168.1.1",
    "169.254.169.254", "fe80::1", "fc00::1", "100.64.0.1", "0.0.0.0", "::",  # noqa: S104
    "224.0.0.1", "ff02::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "240.0.0.1",
)  # fmt: skip


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert refused_address(address)
    with pytest.raises(EndpointRefused) as err:
        check_endpoint("https://push.example/x", resolve=resolver(address))
    assert err.value.reason == "private_address"


def test_public_addresses_pass() -> None:
    for address in ("8.8.8.8", "2001:4860:4860::8888", "1.1.1.1"):
        assert not refused_address(address)
    endpoint = check_endpoint("https://push.example:8443/x", resolve=resolver("8.8.8.8"))
    assert endpoint.origin == "https://push.example:8443"


def test_every_resolved_address_is_checked_not_the_first() -> None:
    with pytest.raises(EndpointRefused):
        check_endpoint("https://push.example/x", resolve=resolver("8.8.8.8", "10.0.0.1"))


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://push.example/x", "not_https"),
        ("ftp://push.example/x", "not_https"),
        ("https://user:pw@push.example/x", "malformed"),
        ("https://push.example/x#frag", "malformed"),
        ("https:///nohost", "malformed"),
        ("https://push.example:99999/x", "malformed"),
        ("https://push.example/" + "a" * 3000, "too_long"),
    ],
)
def test_syntax_rules(url: str, reason: str) -> None:
    with pytest.raises(EndpointRefused) as err:
        check_endpoint(url, resolve=resolver("8.8.8.8"))
    assert err.value.reason == reason


def test_unresolvable_names_are_refused() -> None:
    def fail(host: str, port: int) -> list[str]:
        raise OSError("NXDOMAIN")

    with pytest.raises(EndpointRefused) as err:
        check_endpoint("https://nowhere.example/x", resolve=fail)
    assert err.value.reason == "unresolvable"


def test_operator_listed_test_hosts_may_use_http_and_loopback() -> None:
    endpoint = check_endpoint(
        "http://127.0.0.1:8081/push/s1", allow_hosts={"127.0.0.1"}, resolve=resolver("127.0.0.1")
    )
    assert endpoint.origin == "http://127.0.0.1:8081"
    assert (
        check_endpoint("https://Push.Example:443/a", resolve=resolver("8.8.8.8")).origin
        == "https://push.example"
    )


@given(st.ip_addresses())
def test_refusal_matches_the_public_unicast_rule(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    effective = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else ip
    expected = not effective.is_global or effective.is_multicast
    assert refused_address(str(ip)) is expected
    if expected:
        with pytest.raises(EndpointRefused):
            check_endpoint("https://push.example/x", resolve=resolver(*PUBLIC, str(ip)))
