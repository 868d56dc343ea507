"""GPIOPin validation (common.gpio) and the CRD schema that mirrors it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from common import gpio
from common.errors import ValidationError

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "deploy" / "crds" / "gpiopin.yaml"
EXAMPLES = sorted((ROOT / "deploy" / "crds" / "examples").glob("*.yaml"))


def manifest(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"nodeName": "pi-1", "pin": 17, "mode": "output"}
    base.update(spec)
    base = {k: v for k, v in base.items() if v is not None}
    return {"apiVersion": gpio.API_VERSION, "kind": gpio.KIND, "metadata": {"name": "led-1"},
            "spec": base}


# (spec overrides, the field the API names). Each breaks exactly one rule.
INVALID: list[tuple[dict[str, Any], str]] = [
    ({"pin": 28}, "spec.pin"),
    ({"pin": -1}, "spec.pin"),
    ({"pin": None}, "spec.pin"),
    ({"pin": None, "physicalPin": 1}, "spec.physicalPin"),  # 3.3 V, not a GPIO
    ({"pin": None, "physicalPin": 41}, "spec.physicalPin"),
    ({"mode": "blink"}, "spec.mode"),
    ({"pull": "sideways"}, "spec.pull"),
    ({"state": "on"}, "spec.state"),
    ({"nodeName": ""}, "spec.nodeName"),
    ({"mode": "input", "state": "high"}, "spec.state"),  # writing an input
    ({"mode": "pwm", "state": "high"}, "spec.state"),
    ({"mode": "pwm", "pwmDuty": 100.5}, "spec.pwmDuty"),
    ({"mode": "pwm", "pwmDuty": -1}, "spec.pwmDuty"),
    ({"pwmDuty": 50}, "spec.pwmDuty"),  # output, not pwm
    ({"mode": "pwm", "pwmFrequency": 0}, "spec.pwmFrequency"),
    ({"mode": "pwm", "pin": 17, "pwmFrequency": 20000}, "spec.pwmFrequency"),  # no HW PWM
    ({"mode": "pwm", "pin": None, "physicalPin": 11, "pwmFrequency": 20000},
     "spec.pwmFrequency"),
    ({"mode": "pwm", "pin": 18, "pwmFrequency": 40_000_000}, "spec.pwmFrequency"),
    ({"mode": "servo", "servoPulseWidth": 300}, "spec.servoPulseWidth"),
    ({"mode": "servo", "servoPulseWidth": 2600}, "spec.servoPulseWidth"),
    ({"servoPulseWidth": 1500}, "spec.servoPulseWidth"),  # output, not servo
    ({"mode": "input", "safeState": "low"}, "spec.safeState"),
    ({"mode": "servo", "safeState": "low"}, "spec.safeState"),
    ({"debounceMs": 20}, "spec.debounceMs"),  # output
    ({"mode": "input", "debounceMs": 20_000}, "spec.debounceMs"),
    ({"activeLow": "yes"}, "spec.activeLow"),
]

VALID: list[dict[str, Any]] = [
    {},
    {"state": "high", "safeState": "low", "activeLow": True},
    {"pin": None, "physicalPin": 11},
    {"mode": "input", "pull": "up", "debounceMs": 50},
    {"mode": "pwm", "pwmDuty": 12.5},
    {"mode": "pwm", "pwmDuty": 0, "pwmFrequency": 8000},  # software PWM's ceiling
    {"mode": "pwm", "pin": 18, "pwmDuty": 100, "pwmFrequency": 25_000, "safeState": "low"},
    {"mode": "pwm", "pin": None, "physicalPin": 12, "pwmFrequency": 25_000},  # BCM 18
    {"mode": "servo", "servoPulseWidth": 0},
    {"mode": "servo", "servoPulseWidth": 2500},
]


@pytest.mark.parametrize(("spec", "field"), INVALID, ids=str)
def test_api_rejects_naming_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        gpio.parse_pin(manifest(**spec))
    assert caught.value.field == field
    assert caught.value.reason


@pytest.mark.parametrize("spec", VALID, ids=str)
def test_api_accepts(spec: dict[str, Any]) -> None:
    pin = gpio.parse_pin(manifest(**spec))
    assert pin.spec.pin in gpio.BCM_PINS


def test_physical_pins_become_bcm() -> None:
    assert gpio.parse_pin(manifest(pin=None, physicalPin=12)).spec.pin == 18
    assert gpio.parse_pin(manifest(pin=18, physicalPin=12)).spec.pin == 18
    with pytest.raises(ValidationError, match="does not match"):
        gpio.parse_pin(manifest(pin=17, physicalPin=12))


def test_misspelt_and_malformed_input_is_named() -> None:
    with pytest.raises(ValidationError) as caught:
        gpio.parse_pin(manifest(pwmduty=5))
    assert "pwmduty" in caught.value.reason
    with pytest.raises(ValidationError) as caught:
        gpio.parse_pin(b"{not json")
    assert caught.value.field == "body"
    bad_name = manifest()
    bad_name["metadata"]["name"] = "LED_1"
    with pytest.raises(ValidationError) as caught:
        gpio.parse_pin(bad_name)
    assert caught.value.field == "metadata.name"


def test_command_round_trip() -> None:
    pin = gpio.parse_pin(manifest(state="high"))
    cmd = gpio.GpioCommand(op="apply", resource="led-1", spec=pin.spec, generation=3,
                           actor="alice", request_id="r1")
    assert gpio.decode_command(gpio.encode_command(cmd)) == cmd


# --- the CRD -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    assert crd["spec"]["group"] == gpio.API_VERSION.split("/")[0]
    assert crd["spec"]["names"]["kind"] == gpio.KIND
    (version,) = crd["spec"]["versions"]
    assert version["name"] == gpio.API_VERSION.split("/")[1]
    result: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return result


def schema_errors(schema: dict[str, Any], document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(schema)
    return [e.message for e in validator.iter_errors(document)]


def test_schema_is_structural(schema: dict[str, Any]) -> None:
    """What the Kubernetes API server demands of a CRD schema, as far as we use it."""
    def walk(node: Any, inside_logic: bool, path: str) -> None:
        if isinstance(node, dict):
            if inside_logic:
                assert not {"type", "description", "default", "additionalProperties"} & set(
                    node), f"{path}: not allowed inside allOf/anyOf/oneOf/not"
            assert not {"if", "then", "else", "const", "$ref"} & set(node), path
            if "properties" in node and not inside_logic:
                assert node.get("type") == "object", f"{path}: properties need type object"
            for key, value in node.items():
                logic = key in ("allOf", "anyOf", "oneOf", "not")
                walk(value, inside_logic or logic, f"{path}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, inside_logic, f"{path}[{i}]")

    walk(schema, False, "$")


@pytest.mark.parametrize("spec", VALID, ids=str)
def test_schema_accepts_what_the_api_accepts(schema: dict[str, Any], spec: dict[str, Any]
                                             ) -> None:
    document = manifest(**spec)
    assert schema_errors(schema, document) == []
    gpio.parse_pin(copy.deepcopy(document))


@pytest.mark.parametrize(("spec", "field"), INVALID, ids=str)
def test_schema_rejects_what_the_api_rejects(schema: dict[str, Any], spec: dict[str, Any],
                                             field: str) -> None:
    document = manifest(**spec)
    assert schema_errors(schema, document), f"the CRD schema accepts {spec}"
    with pytest.raises(ValidationError):
        gpio.parse_pin(copy.deepcopy(document))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_manifests_are_valid_for_both(schema: dict[str, Any], path: Path) -> None:
    document = yaml.safe_load(path.read_text())
    assert schema_errors(schema, document) == []
    pin = gpio.parse_pin(document)
    assert pin.metadata.name == document["metadata"]["name"]


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 3
