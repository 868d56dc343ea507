"""One grammar for names and addresses: whole values only, so nothing can smuggle a newline,
a comma or a quote into a command line, a key or a list."""

from __future__ import annotations

import pytest

from common import grammar

SMUGGLED = ["pi-1\n", "pi-1\r\n", "pi 1", "pi-1,--token=x", "pi-1'", 'pi-1"', "pi-1;id",
            "pi-1\x00", "", "-pi", "pi-", "PI-1", "p" * 64]


@pytest.mark.parametrize("value", SMUGGLED)
def test_labels_refuse_anything_but_a_dns_label(value: str) -> None:
    assert not grammar.is_label(value)


@pytest.mark.parametrize("value", ["pi-1", "a", "p" * 63, "0-node-9"])
def test_labels_take_dns_labels(value: str) -> None:
    assert grammar.is_label(value)


@pytest.mark.parametrize("value", ["pi.local\n", "a,b", "pi local", "x" * 254, "-pi.local",
                                   "pi..local", "pi.local'", "ä.local"])
def test_hostnames_refuse_what_is_not_one(value: str) -> None:
    assert not grammar.is_hostname(value)
    assert grammar.host(value) is None


@pytest.mark.parametrize(("value", "normal"), [
    ("raspberrypi.local", "raspberrypi.local"), ("Pi-4.lan.", "Pi-4.lan."),
    ("192.168.1.50", "192.168.1.50"), ("fe80::0001", "fe80::1")])
def test_hosts_are_ips_normalised_or_hostnames(value: str, normal: str) -> None:
    assert grammar.host(value) == normal


@pytest.mark.parametrize(("value", "ok"), [
    ("pi", True), ("_svc", True), ("deploy-1", True), ("root\n", False), ("Pi", False),
    ("u" * 33, False), ("a b", False)])
def test_ssh_users(value: str, ok: bool) -> None:
    assert grammar.is_ssh_user(value) is ok
