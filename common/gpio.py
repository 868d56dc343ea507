"""The GPIOPin resource (mirrors the Kubernetes CRD), its validation, and the agent command.

Pins are BCM numbers 0-27. A manifest may give ``spec.physicalPin`` (the 40-pin header's
numbering) instead; it is converted to BCM on validation.
"""

from __future__ import annotations

import re
from typing import Any, Final, Literal

import msgspec

from common import grammar
from common.errors import ValidationError

API_VERSION: Final = "hardware.pi-controller.io/v1"
KIND: Final = "GPIOPin"

Mode = Literal["input", "output", "pwm", "servo"]
Pull = Literal["none", "up", "down"]
Level = Literal["high", "low"]
Phase = Literal["Pending", "Applied", "Error"]

BCM_PINS: Final = range(28)
HARDWARE_PWM_PINS: Final = frozenset({12, 13, 18, 19})
SOFTWARE_PWM_MAX_HZ: Final = 8000
"""pigpio's software PWM tops out at 8 kHz (default 5 us sampling); faster needs hardware PWM."""
HARDWARE_PWM_MAX_HZ: Final = 30_000_000
SERVO_PULSE_MIN_US: Final = 500
SERVO_PULSE_MAX_US: Final = 2500
DEBOUNCE_MAX_MS: Final = 10_000
SAFE_STATE_MODES: Final = frozenset({"output", "pwm"})

PHYSICAL_TO_BCM: Final[dict[int, int]] = {
    3: 2, 5: 3, 7: 4, 8: 14, 10: 15, 11: 17, 12: 18, 13: 27, 15: 22, 16: 23, 18: 24, 19: 10,
    21: 9, 22: 25, 23: 11, 24: 8, 26: 7, 27: 0, 28: 1, 29: 5, 31: 6, 32: 12, 33: 13, 35: 19,
    36: 16, 37: 26, 38: 20, 40: 21,
}
BCM_TO_PHYSICAL: Final = {bcm: phys for phys, bcm in PHYSICAL_TO_BCM.items()}

"""Kubernetes DNS-label names: what a GPIOPin's metadata.name may be."""


class Metadata(msgspec.Struct, kw_only=True, omit_defaults=True):
    name: str
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    generation: int = 0
    creationTimestamp: str | None = None


class GpioSpec(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel",
               forbid_unknown_fields=True):
    """A misspelt field (``pwmduty``) is an error, not a silently ignored wish."""

    node_name: str
    pin: int | None = None
    physical_pin: int | None = None
    mode: Mode
    pull: Pull = "none"
    debounce_ms: int = 0
    active_low: bool = False
    state: Level | None = None
    pwm_duty: float | None = None
    pwm_frequency: int | None = None
    servo_pulse_width: int | None = None
    safe_state: Level | None = None


class GpioStatus(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel"):
    phase: Phase | None = None
    """None only until the store fills it in (Pending); a default would be omitted."""
    state: Level | None = None
    pwm_duty: float | None = None
    servo_pulse_width: int | None = None
    message: str = ""
    observed_at: str | None = None
    last_changed_at: str | None = None
    last_changed_by: str | None = None
    request_id: str | None = None
    backend: str | None = None
    observed_generation: int = 0


class GpioPin(msgspec.Struct, kw_only=True, omit_defaults=True):
    apiVersion: str = API_VERSION
    kind: str = KIND
    metadata: Metadata
    spec: GpioSpec
    status: GpioStatus = msgspec.field(default_factory=GpioStatus)


class GpioCommand(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What the controller asks an agent to do, on the node's command stream."""

    op: Literal["apply", "release"]
    resource: str
    spec: GpioSpec
    generation: int = 0
    actor: str | None = None
    request_id: str | None = None


_LOCATION = re.compile(r" - at `\$\.?(.*)`$")


def field_of(err: msgspec.ValidationError, prefix: str = "") -> tuple[str, str]:
    """Split msgspec's message into (field path, reason)."""
    text = str(err)
    match = _LOCATION.search(text)
    if not match:
        return prefix.rstrip(".") or "body", text
    path = match.group(1).replace("[", ".").replace("]", "")
    return prefix + path, text[: match.start()]


def parse_pin(raw: bytes | dict[str, Any]) -> GpioPin:
    """Decode a manifest (JSON bytes or a dict) into a GpioPin, then validate it."""
    try:
        if isinstance(raw, bytes | bytearray):
            pin = msgspec.json.decode(raw, type=GpioPin)
        else:
            pin = msgspec.convert(raw, GpioPin)
    except msgspec.ValidationError as err:
        raise ValidationError(*field_of(err)) from err
    except msgspec.DecodeError as err:
        raise ValidationError("body", f"not valid JSON: {err}") from err
    validate(pin)
    return pin


def validate(pin: GpioPin) -> None:
    """Check one resource on its own; clashes with other resources are the store's job."""
    if pin.apiVersion != API_VERSION:
        raise ValidationError("apiVersion", f"must be {API_VERSION}")
    if pin.kind != KIND:
        raise ValidationError("kind", f"must be {KIND}")
    if not grammar.is_label(pin.metadata.name):
        raise ValidationError("metadata.name", "must be a DNS label: lower-case letters, "
                              "digits and '-', at most 63 characters")
    validate_spec(pin.spec)


def validate_spec(spec: GpioSpec) -> None:
    if not spec.node_name:
        raise ValidationError("spec.nodeName", "is required")
    if spec.physical_pin is not None:
        bcm = PHYSICAL_TO_BCM.get(spec.physical_pin)
        if bcm is None:
            raise ValidationError("spec.physicalPin", f"header pin {spec.physical_pin} is not a "
                                  "GPIO (power, ground or out of 1-40)")
        if spec.pin is not None and spec.pin != bcm:
            raise ValidationError("spec.pin", f"BCM {spec.pin} does not match physicalPin "
                                  f"{spec.physical_pin} (BCM {bcm})")
        spec.pin = bcm
        spec.physical_pin = None
    if spec.pin is None:
        raise ValidationError("spec.pin", "is required (BCM 0-27, or give spec.physicalPin)")
    if spec.pin not in BCM_PINS:
        raise ValidationError("spec.pin", f"{spec.pin} is out of range: BCM pins are 0-27")
    if not 0 <= spec.debounce_ms <= DEBOUNCE_MAX_MS:
        raise ValidationError("spec.debounceMs", f"must be 0-{DEBOUNCE_MAX_MS}")
    if spec.debounce_ms and spec.mode != "input":
        raise ValidationError("spec.debounceMs", "only applies to input pins")
    if spec.mode == "input":
        for name, value in (("spec.state", spec.state), ("spec.pwmDuty", spec.pwm_duty),
                            ("spec.servoPulseWidth", spec.servo_pulse_width),
                            ("spec.safeState", spec.safe_state)):
            if value is not None:
                raise ValidationError(name, "an input pin cannot be written")
    if spec.pwm_duty is not None:
        if spec.mode != "pwm":
            raise ValidationError("spec.pwmDuty", "only applies to mode pwm")
        if not 0 <= spec.pwm_duty <= 100:
            raise ValidationError("spec.pwmDuty", f"{spec.pwm_duty} is out of range 0-100 (%)")
    if spec.pwm_frequency is not None:
        if spec.mode != "pwm":
            raise ValidationError("spec.pwmFrequency", "only applies to mode pwm")
        if spec.pwm_frequency <= 0:
            raise ValidationError("spec.pwmFrequency", "must be a positive number of Hz")
        if spec.pwm_frequency > SOFTWARE_PWM_MAX_HZ and spec.pin not in HARDWARE_PWM_PINS:
            raise ValidationError(
                "spec.pwmFrequency",
                f"{spec.pwm_frequency} Hz needs hardware PWM, which only BCM 12, 13, 18 and 19 "
                f"have; BCM {spec.pin} gets software PWM, at most {SOFTWARE_PWM_MAX_HZ} Hz")
        if spec.pwm_frequency > HARDWARE_PWM_MAX_HZ:
            raise ValidationError("spec.pwmFrequency", f"at most {HARDWARE_PWM_MAX_HZ} Hz")
    if spec.servo_pulse_width is not None:
        if spec.mode != "servo":
            raise ValidationError("spec.servoPulseWidth", "only applies to mode servo")
        if spec.servo_pulse_width != 0 and not (
                SERVO_PULSE_MIN_US <= spec.servo_pulse_width <= SERVO_PULSE_MAX_US):
            raise ValidationError("spec.servoPulseWidth", f"{spec.servo_pulse_width} us is out "
                                  f"of range: 0 (off) or {SERVO_PULSE_MIN_US}-{SERVO_PULSE_MAX_US}")
    if spec.state is not None and spec.mode != "output":
        raise ValidationError("spec.state", f"only applies to mode output, not {spec.mode}")
    if spec.safe_state is not None and spec.mode not in SAFE_STATE_MODES:
        raise ValidationError("spec.safeState", "only applies to modes output and pwm "
                              f"(pwm: low = 0 %, high = 100 %), not {spec.mode}")


_cmd_encoder: Final = msgspec.msgpack.Encoder()
_cmd_decoder: Final = msgspec.msgpack.Decoder(GpioCommand)
_pin_encoder: Final = msgspec.json.Encoder()
_pin_decoder: Final = msgspec.json.Decoder(GpioPin)


def encode_command(cmd: GpioCommand) -> bytes:
    return _cmd_encoder.encode(cmd)


def decode_command(raw: bytes) -> GpioCommand:
    return _cmd_decoder.decode(raw)


def encode_pin(pin: GpioPin) -> bytes:
    return _pin_encoder.encode(pin)


def decode_pin(raw: bytes) -> GpioPin:
    return _pin_decoder.decode(raw)
