"""The egress guard: every refused address class, the allow list, and the connect-time check
(a name that resolves to a private address, a literal address the static check never saw)."""

from __future__ import annotations

import ipaddress

import aiohttp
import pytest

from gateway.core.egress import (
    EgressPolicy,
    EgressRefusedError,
    StaticResolver,
    guarded_session,
    refusal_of,
)
from tests.tools.receiver import receiver

REFUSED = [
    ("127.0.0.1", "loopback"),
    ("[::1]", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.9", "private"),
    ("192.168.1.1", "private"),
    ("[fc00::1]", "private"),
    ("169.254.169.254", "link-local"),
    ("[fe80::1]", "link-local"),
    ("224.0.0.1", "multicast"),
    ("[ff02::1]", "multicast"),
    ("0.0.0.0", "unspecified"),  # noqa: S104 (an address under test, not a bind)
    ("[::]", "unspecified"),
    ("[::ffff:10.0.0.1]", "private"),
    ("[::ffff:169.254.169.254]", "link-local"),
    ("[2002:a00:1::1]", "private"),  # 6to4 around 10.0.0.1
    ("[64:ff9b::7f00:1]", "loopback"),  # NAT64 around 127.0.0.1
    # IPv4-compatible IPv6 (deprecated, in the reserved ::/8), which Python calls global.
    ("[::a9fe:a9fe]", "link-local"),
    ("[::7f00:1]", "loopback"),
    ("[::a00:1]", "private"),
    ("[::8.8.8.8]", "reserved"),
    ("[::1:2:3]", "reserved"),
    ("100.64.0.1", "reserved"),
    # IPv4 in the legacy forms every resolver reads as an address (inet_aton), not a name.
    ("0xa9.0xfe.0xa9.0xfe", "link-local"),
    ("0xa9fea9fe", "link-local"),
    ("2852039166", "link-local"),
    ("169.254.43518", "link-local"),
    ("0251.0376.0251.0376", "link-local"),
    ("10.1", "private"),
    ("0x7f.1", "loopback"),
]


@pytest.mark.parametrize(("host", "kind"), REFUSED)
def test_each_refused_address_class_is_refused_as_a_literal(host: str, kind: str) -> None:
    with pytest.raises(EgressRefusedError, match=kind):
        EgressPolicy().check_url(f"https://{host}/hook")


def test_public_https_passes_and_http_needs_the_allow_list() -> None:
    policy = EgressPolicy()
    policy.check_url("https://tools.example.com/hook")
    policy.check_url("https://93.184.216.34/hook")
    with pytest.raises(EgressRefusedError, match="https"):
        policy.check_url("http://tools.example.com/hook")
    for bad in ("ftp://tools.example.com/x", "https:///x", "https://user:pw@tools.example.com/"):
        with pytest.raises(EgressRefusedError):
            policy.check_url(bad)


def test_the_allow_list_admits_cidrs_and_host_names_over_http() -> None:
    policy = EgressPolicy.parse("127.0.0.0/8, 10.9.0.0/16 ,tools.internal")
    policy.check_url("http://127.0.0.1:9000/hook")
    policy.check_url("http://localhost:9000/hook")
    policy.check_url("https://10.9.1.1/hook")
    policy.check_url("http://tools.internal/hook")
    with pytest.raises(EgressRefusedError):
        policy.check_url("https://10.8.0.1/hook")
    with pytest.raises(EgressRefusedError, match="https"):
        policy.check_url("http://other.internal/hook")
    # An allowed CIDR also covers its IPv4-mapped IPv6 form.
    assert policy.address_allowed(ipaddress.ip_address("::ffff:127.0.0.1"))


async def test_a_name_resolving_to_a_private_address_is_refused_at_connect() -> None:
    async with receiver() as tool:
        port = tool.base_url.rsplit(":", 1)[1]
        resolver = StaticResolver({"tools.example.test": ["127.0.0.1"]})
        policy = EgressPolicy()
        url = f"https://tools.example.test:{port}/hook"
        policy.check_url(url)  # a name: the static check cannot know where it points
        session = guarded_session(policy, resolver=resolver)
        try:
            with pytest.raises(aiohttp.ClientError) as caught:
                await session.post(url, data=b"{}")
        finally:
            await session.close()
        refusal = refusal_of(caught.value)
        assert refusal is not None and "loopback" in str(refusal)
        assert tool.requests == []


async def test_a_literal_address_is_checked_at_connect_too() -> None:
    async with receiver() as tool:
        session = guarded_session(EgressPolicy())
        try:
            with pytest.raises(aiohttp.ClientError) as caught:
                await session.post(tool.url("/hook"), data=b"{}")
        finally:
            await session.close()
        assert refusal_of(caught.value) is not None
        assert tool.requests == []


async def test_an_allowed_cidr_lets_a_resolved_name_connect() -> None:
    async with receiver() as tool:
        port = tool.base_url.rsplit(":", 1)[1]
        resolver = StaticResolver({"tools.example.test": ["127.0.0.1"]})
        session = guarded_session(EgressPolicy.parse("127.0.0.0/8"), resolver=resolver)
        try:
            async with session.post(
                f"http://tools.example.test:{port}/hook", data=b'{"arguments": {}}'
            ) as response:
                assert response.status == 200
        finally:
            await session.close()
        assert len(tool.requests) == 1


@pytest.mark.parametrize(
    "url",
    [
        "https://exa mple.com/hook",  # a space in the host
        "https://%31%30.0.0.1/hook",  # a percent-encoded host
        "https://-tools.example.com/hook",
        "https://tools..example.com/hook",
        "https://" + "a" * 64 + ".example.com/hook",
        "https://999.999.999.999/hook",  # all digits: neither a name nor an address
        "https://08.8.8.8/hook",
    ],
)
def test_a_host_that_is_no_host_name_is_refused(url: str) -> None:
    with pytest.raises(EgressRefusedError, match="not a valid host name"):
        EgressPolicy().check_url(url)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("https://[::1/hook", "malformed"),  # urlsplit raised: was a 500 at PUT
        ("https://[zz]/hook", "malformed"),
        ("https://[1.2.3.4]/hook", "malformed"),
        ("https://[v1.x]/hook", "malformed"),  # IPvFuture
        ("https://[::1]]/hook", "malformed"),
        ("https://tools.example.com:0/hook", "malformed"),
        ("https://\u2603.example/hook", "IDNA"),  # no IDNA 2008 encoding: httpx refuses it
        ("https://exa\u200bmple.com/hook", "IDNA"),
        ("https://\uff11\uff16\uff19.254.169.254/hook", "IDNA"),  # fullwidth digits
    ],
)
def test_a_malformed_or_unencodable_host_is_refused(url: str, says: str) -> None:
    with pytest.raises(EgressRefusedError, match=says):
        EgressPolicy.parse("127.0.0.0/8").check_url(url)


def test_an_allowed_address_in_a_legacy_form_is_refused_and_a_trailing_dot_changes_nothing() -> (
    None
):
    policy = EgressPolicy.parse("127.0.0.0/8")
    for legacy in ("http://127.1:9000/hook", "http://0177.0.0.1:9000/hook", "https://134744072/"):
        with pytest.raises(EgressRefusedError, match="dotted-decimal"):
            policy.check_url(legacy)
    policy.check_url("https://tools.example.com./hook")
    policy.check_url("https://b\u00fccher.example/hook")  # IDNA 2008: xn--bcher-kva
    policy.check_url("https://[2001:4860:4860:0::8888]:8443/hook")
    # No resolver reads `127.0.0.1.` as the address; the metadata address stays refused.
    for dotted in ("http://127.0.0.1.:9000/hook", "https://169.254.169.254./latest/meta-data"):
        with pytest.raises(EgressRefusedError, match="trailing dot"):
            policy.check_url(dotted)
