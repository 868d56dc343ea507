"""Pure rules of the node lifecycle: record parsing, Pi recognition, health parsing and
thresholds."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import health
from controller.discovery import mdns
from controller.discovery.recognise import Sighting, node_id_for, pi_evidence
from controller.discovery.scan import mac_from_arp, scan_targets
from controller.health_alerts import Thresholds, evaluate


def test_workstation_record_gives_the_mac() -> None:
    s = mdns.sighting_from(mdns.WORKSTATION, "raspberrypi [DC:A6:32:01:02:03]._workstation."
                           "_tcp.local.", "raspberrypi.local.", ["10.0.0.5"], {b"": None})
    assert (s.hostname, s.mac, s.address, s.source) == (
        "raspberrypi", "dc:a6:32:01:02:03", "10.0.0.5", "mdns:workstation")
    assert pi_evidence(s) == "MAC vendor prefix dc:a6:32"


def test_agent_record_reads_the_txt() -> None:
    s = mdns.sighting_from(mdns.AGENT, "pi-1._pi-agent._tcp.local.", "pi-1.local.",
                           ["10.0.0.6"], {b"node_id": b"pi-1", b"version": b"0.1.0",
                                          b"model": b"Raspberry Pi 5", b"arch": b"aarch64",
                                          b"hostname": None})
    assert (s.node_id, s.agent_version, s.model, s.arch, s.hostname) == (
        "pi-1", "0.1.0", "Raspberry Pi 5", "aarch64", "pi-1")
    assert pi_evidence(s) == "runs pi-agent"


@pytest.mark.parametrize(("props", "addresses", "reason"), [
    ({b"version": b"1"}, ["10.0.0.7"], "TXT 'node_id' missing"),
    ({b"node_id": b"\xff"}, ["10.0.0.7"], "not UTF-8"),
    ({b"node_id": b"UPPER case"}, ["10.0.0.7"], "not a node id"),
    ({b"node_id": b"pi-1"}, [], "no IPv4 address"),
])
def test_bad_agent_records_say_what_is_wrong(props: dict[bytes, bytes | None],
                                             addresses: list[str], reason: str) -> None:
    with pytest.raises(mdns.BadRecord, match=reason):
        mdns.sighting_from(mdns.AGENT, "x._pi-agent._tcp.local.", "x.local.", addresses,
                           props)


@pytest.mark.parametrize(("sighting", "is_pi"), [
    (Sighting("scan", "10.0.0.1", mac="b8:27:eb:00:00:01"), True),
    (Sighting("scan", "10.0.0.1", mac="02:00:00:00:00:01"), False),
    (Sighting("mdns:ssh", "10.0.0.1", hostname="raspberrypi-2"), True),
    (Sighting("mdns:ssh", "10.0.0.1", hostname="raspberry"), False),
    (Sighting("scan", "10.0.0.1", banner="SSH-2.0-OpenSSH_7.9p1 Raspbian-10+deb10u2"), True),
    (Sighting("scan", "10.0.0.1", banner="SSH-2.0-OpenSSH_9.2p1 Debian-2"), False),
])
def test_pi_recognition(sighting: Sighting, is_pi: bool) -> None:
    assert bool(pi_evidence(sighting)) is is_pi


def test_node_ids_are_dns_labels() -> None:
    assert node_id_for(Sighting("mdns:ssh", "10.0.0.1", hostname="My_Pi.lan")) == "my-pi-lan"
    assert node_id_for(Sighting("manual", "10.0.0.9")) == "node-10-0-0-9"
    assert node_id_for(Sighting("manual", "10.0.0.9"), "pi-9") == "pi-9"


def test_scan_is_bounded() -> None:
    assert len(scan_targets("10.1.2.0/24", 1024)) == 254
    with pytest.raises(ValueError, match="more than the 1024 allowed"):
        scan_targets("10.0.0.0/8", 1024)
    with pytest.raises(ValueError):
        scan_targets("10.0.0.300/24", 1024)


def test_mac_from_arp(tmp_path: Path) -> None:
    table = tmp_path / "arp"
    table.write_text("IP address  HW type  Flags  HW address  Mask  Device\n"
                     "10.0.0.5 0x1 0x2 dc:a6:32:01:02:03 * eth0\n"
                     "10.0.0.6 0x1 0x0 00:00:00:00:00:00 * eth0\n")
    assert mac_from_arp("10.0.0.5", table) == "dc:a6:32:01:02:03"
    assert mac_from_arp("10.0.0.6", table) == ""
    assert mac_from_arp("10.0.0.7", table) == ""


@pytest.mark.parametrize(("text", "bits"), [
    ("throttled=0x50005\n", 0x50005), ("50000\n", 0x50000), ("0x0", 0), ("garbage", None)])
def test_throttled_parsing(text: str, bits: int | None) -> None:
    assert health.parse_throttled(text) == bits


def test_throttled_fields() -> None:
    fields = health.throttled_fields(0x50005)
    assert fields["under_voltage"] and fields["throttled"] and not fields["freq_capped"]
    assert fields["under_voltage_occurred"] and fields["throttled_occurred"]
    assert health.throttled_fields(None)["under_voltage"] is None


def test_cpu_temperature_prefers_the_cpu_zone(tmp_path: Path) -> None:
    for index, (kind, temp) in enumerate((("gpu-thermal", "40000"), ("cpu-thermal", "61234"))):
        zone = tmp_path / f"sys/class/thermal/thermal_zone{index}"
        zone.mkdir(parents=True)
        (zone / "type").write_text(kind)
        (zone / "temp").write_text(temp)
    assert health.cpu_temperature(tmp_path) == 61.2
    assert health.cpu_temperature(tmp_path / "nowhere") is None


def test_thresholds_with_hysteresis_and_garbage() -> None:
    limits = Thresholds(temp_warning=80, temp_hysteresis=5, disk_warning=90)

    def alerting(metrics: dict[str, object], active: set[str]) -> set[str]:
        return {v.condition for v in evaluate("pi", metrics, active, limits) if v.alerting}

    assert alerting({"cpu_temp_c": 80.0}, set()) == {"temperature"}
    assert alerting({"cpu_temp_c": 77.0}, set()) == set()
    assert alerting({"cpu_temp_c": 77.0}, {"temperature"}) == {"temperature"}
    assert alerting({"cpu_temp_c": 74.9}, {"temperature"}) == set()
    assert alerting({"under_voltage": True, "throttled": False, "disk_percent": 95}, set()
                    ) == {"under_voltage", "disk"}
    # Wrong types say nothing rather than raise.
    assert evaluate("pi", {"cpu_temp_c": "hot", "under_voltage": 1, "disk_percent": None},
                    set(), limits) == []
