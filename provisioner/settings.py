"""Runtime settings from ``PROVISIONER_*`` environment variables and CLI flags.

The login falls back to ``RABBITMQ_DEFAULT_USER``/``RABBITMQ_DEFAULT_PASS``,
the variables the broker container is seeded with, so a container that
already sets them needs no second copy of the admin secret.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from provisioner.errors import InvalidInput, Problem

GUEST = "guest"


class Settings(BaseSettings):
    """Everything the provisioner needs besides the users file itself."""

    model_config = SettingsConfigDict(
        env_prefix="PROVISIONER_", populate_by_name=True, extra="ignore"
    )

    management_url: str = "http://127.0.0.1:15672"
    # MQTT over WebSocket, used only by `verify`.
    mqtt_url: str = "ws://127.0.0.1:15675/ws"
    username: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "PROVISIONER_USERNAME", "RABBITMQ_DEFAULT_USER", "username"
        ),
    )
    password: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "PROVISIONER_PASSWORD", "RABBITMQ_DEFAULT_PASS", "password"
        ),
    )
    users_file: Path = Path("users.yaml")
    # Upper bounds keep values inside what the clock and sockets accept.
    wait_timeout: float = Field(default=120.0, gt=0, le=86400)
    request_timeout: float = Field(default=10.0, gt=0, le=3600)
    verify_tls: bool = True
    ca_bundle: Path | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    bulk: bool = True
    reconcile_interval: float = Field(default=0.0, ge=0)
    close_connections: bool = False
    remove_guest: bool = False
    # Set by entrypoint.sh: the broker's PID, so the serve loop can end
    # when the broker it looks after has exited.
    broker_pid: int | None = Field(default=None, gt=0)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("management_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        try:
            parts.port  # noqa: B018 - parsing the port validates it
        except ValueError:
            raise ValueError(
                "has an invalid port; use a number from 1 to 65535"
            ) from None
        if parts.query or parts.fragment:
            raise ValueError(
                "must not have a query or fragment; give the base URL, such as "
                "http://127.0.0.1:15672"
            )
        if parts.username is not None or parts.password is not None:
            # The value is not echoed: it contains a credential.
            raise ValueError(
                "must not contain credentials; set PROVISIONER_USERNAME and "
                "PROVISIONER_PASSWORD instead"
            )
        return value.rstrip("/")

    @field_validator("mqtt_url")
    @classmethod
    def _check_mqtt_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(
                "must be a ws:// or wss:// URL with a host, such as ws://127.0.0.1:15675/ws"
            )
        if parts.username is not None or parts.password is not None:
            raise ValueError(
                "must not contain credentials; verify logs in as each user"
            )
        if parts.query or parts.fragment:
            raise ValueError("must not contain a query or fragment")
        try:
            parts.port  # noqa: B018 -- raises ValueError for an invalid port
        except ValueError:
            raise ValueError("has an invalid port") from None
        return value

    @property
    def login(self) -> str:
        """User name the provisioner logs in with."""
        return self.username or GUEST

    @property
    def login_password(self) -> str:
        """Password the provisioner logs in with."""
        if self.password is None:
            return GUEST if self.username is None else ""
        return self.password.get_secret_value()

    def credential_source(self, environ: Mapping[str, str] | None = None) -> str:
        """Say where the login came from, for error messages."""
        env = os.environ if environ is None else environ
        for name in ("PROVISIONER_USERNAME", "RABBITMQ_DEFAULT_USER"):
            if env.get(name) == self.username and self.username is not None:
                return f"the environment variable {name}"
        if self.username is not None:
            return "the --username flag"
        return "the built-in default guest/guest (set PROVISIONER_USERNAME)"

    @property
    def tls_verify(self) -> bool | str:
        """Value for requests' ``verify``: a CA bundle path, or on/off."""
        if self.ca_bundle is not None:
            return str(self.ca_bundle)
        return self.verify_tls


def load_settings(overrides: Mapping[str, Any] | None = None) -> Settings:
    """Build the settings; raise InvalidInput naming each bad variable."""
    given = {
        key: value for key, value in (overrides or {}).items() if value is not None
    }
    try:
        return Settings(**given)
    except ValidationError as error:
        problems = [_problem(detail, set(given)) for detail in error.errors()]
        raise InvalidInput(problems) from None


def _problem(detail: Any, flags: set[str]) -> Problem:
    field = str(detail["loc"][0]) if detail["loc"] else "settings"
    # A value given on the command line is named by its flag.
    if field in flags:
        variable = "--" + field.replace("_", "-")
    else:
        variable = f"PROVISIONER_{field.upper()}"
    message = str(detail["msg"]).removeprefix("Value error, ")
    # pydantic's message never contains the input here; the input itself is
    # left out because it may be a password or a URL with credentials.
    return Problem(variable, message)
