"""Typed settings, read from ``PIC_*`` environment variables and matching command-line flags.

Each process has one frozen settings dataclass. A field ``redis_url`` is set by the flag
``--redis-url`` or the variable ``PIC_REDIS_URL`` (the flag wins), and is converted to the
field's type by msgspec. Fields marked secret are masked whenever settings are shown.
The environment is read only at the entry point; everything else gets the settings object.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit, urlunsplit

import msgspec

from common.errors import ValidationError

ENV_PREFIX = "PIC_"
T = TypeVar("T")


def setting(default: Any, help: str, *, secret: bool = False, flag: bool = True,
            env: str | None = None) -> Any:
    """Declare a settings field with its help text (units and why the default).

    ``env`` names the variable when it is not simply ``PIC_`` + the field's name.
    """
    metadata = {"help": help, "secret": secret, "flag": flag, "env": env}
    if isinstance(default, list | dict):
        return dataclasses.field(default_factory=lambda: type(default)(default),
                                 metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RedisSettings:
    redis_url: str = setting(
        "redis://127.0.0.1:6379/0", "Redis URL; a password in it is never shown", secret=False)
    redis_prefix: str = setting(
        "pic:", "prefix of every key; use a hash tag such as {pic}: for Redis Cluster")
    redis_url_file: str = setting(
        "", "read the Redis URL from this file instead (root-only), so its password is in "
        "neither the environment nor the process list")
    redis_ca_file: str = setting(
        "", "CA certificate that signs Redis' TLS certificate, for rediss:// URLs")

    def redis_target(self) -> str:
        """The Redis URL to use: the file's first line when ``redis_url_file`` is set."""
        if self.redis_url_file:
            try:
                text = Path(self.redis_url_file).read_text()
            except OSError as err:
                raise ValueError(f"cannot read redis_url_file {self.redis_url_file}: "
                                 f"{err.strerror}") from None
            return text.strip().splitlines()[0] if text.strip() else ""
        return self.redis_url


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoggingSettings:
    log_level: str = setting("info", "debug, info, warning or error")
    log_json: bool = setting(False, "log one JSON object per line (for journald or Loki)")


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def env_var(field: dataclasses.Field[Any]) -> str:
    """The environment variable that sets this settings field."""
    return str(field.metadata.get("env") or env_name(field.name))


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def _is_bool(tp: Any) -> bool:
    return tp is bool or tp == "bool"


def add_arguments(parser: argparse.ArgumentParser, cls: type[Any]) -> None:
    """Add one flag per settings field, each defaulting to 'not given'."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.metadata.get("flag", True):
            continue
        help_text = f"{f.metadata.get('help', '')} (env {env_var(f)})"
        if _is_bool(hints[f.name]):
            parser.add_argument(flag_name(f.name), dest=f.name, default=None,
                                action=argparse.BooleanOptionalAction, help=help_text)
        else:
            parser.add_argument(flag_name(f.name), dest=f.name, default=None, help=help_text)


def _coerce(raw: str, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is list or (origin in (typing.Union, types.UnionType)
                          and any(typing.get_origin(a) is list for a in typing.get_args(tp))):
        return [item.strip() for item in raw.split(",") if item.strip()]
    return raw


def load(cls: type[T], args: argparse.Namespace | None = None,
         env: Mapping[str, str] | None = None) -> T:
    """Build settings from flags, then ``PIC_*`` variables, then defaults.

    Raises ValidationError naming the variable and the reason when a value does not fit.
    """
    env = os.environ if env is None else env
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        given = getattr(args, f.name, None) if args is not None else None
        if given is None and env_var(f) in env:
            given = env[env_var(f)]
        if given is None:
            continue
        if isinstance(given, str):
            given = _coerce(given, hints[f.name])
        try:
            values[f.name] = msgspec.convert(given, hints[f.name], strict=False)
        except msgspec.ValidationError as err:
            raise ValidationError(f"{flag_name(f.name)} / {env_var(f)}", str(err)) from err
    return cls(**values)


SECRET_PARAMS: Final = ("sentinel_password", "password")
"""Query parameters of a Redis URL that carry a password."""


def mask_url(url: str) -> str:
    """A URL with its passwords (in the authority and in the query) replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is not None:
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = parts.netloc.rsplit("@", 1)[0].partition(":")[0]
        parts = parts._replace(netloc=f"{user}:***@{netloc}")
    if parts.query:
        query = "&".join(
            f"{name}=***" if name in SECRET_PARAMS else f"{name}={value}" if sep else name
            for name, sep, value in (item.partition("=") for item in parts.query.split("&")))
        parts = parts._replace(query=query)
    return urlunsplit(parts)


def describe(settings: Any) -> dict[str, Any]:
    """The settings as a dict fit to log: secrets masked, URL passwords hidden."""
    shown: dict[str, Any] = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if f.metadata.get("secret") and value:
            value = "***"
        elif isinstance(value, str) and "://" in value:
            value = mask_url(value)
        shown[f.name] = value
    return shown


def markdown_table(cls: type[Any]) -> str:
    """The settings as a Markdown table: variable, flag, default, meaning."""
    rows = ["| variable | flag | default | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "")
        if isinstance(default, list):
            default = ",".join(default)
        shown = f"`{default}`" if default not in ("", None) else ""
        meaning = str(f.metadata.get("help", "")).replace("|", "\\|")
        rows.append(f"| `{env_var(f)}` | `{flag_name(f.name)}` | {shown} | {meaning} |")
    return "\n".join(rows)
