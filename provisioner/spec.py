"""The shape of ``users.yaml``: pydantic models in RabbitMQ's own terms.

These models check types and keys only. Checks that need the whole file
(duplicates, references, regexes, password sources) live in ``validate``.
The models are strict, so YAML's implicit typing (``no`` as a boolean,
``0123`` as a number) is reported instead of converted.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    WithJsonSchema,
)

from provisioner import mqtt

DEFAULT_EXCHANGE = "amq.topic"
HASH_ALGORITHMS = ("sha256", "sha512", "md5")


def _split_tags(value: Any) -> Any:
    # The broker's own API accepts "a,b" as well as ["a", "b"].
    if isinstance(value, str):
        return [tag.strip() for tag in value.split(",") if tag.strip()]
    return value


Tags = Annotated[
    list[str],
    BeforeValidator(_split_tags),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "array", "items": {"type": "string"}},
                {"type": "string", "description": "comma-separated tags"},
            ]
        }
    ),
]
Regex = str


class _Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, populate_by_name=False
    )


class UserLimits(_Strict):
    """Per-user limits; a negative value means no limit and 0 blocks the user."""

    max_connections: int | None = Field(default=None, alias="max-connections", ge=-1)
    max_channels: int | None = Field(default=None, alias="max-channels", ge=-1)


class VhostLimits(_Strict):
    """Per-vhost limits; a negative value means no limit."""

    max_connections: int | None = Field(default=None, alias="max-connections", ge=-1)
    max_queues: int | None = Field(default=None, alias="max-queues", ge=-1)


class Vhost(_Strict):
    """A virtual host; ``description`` is left as the broker has it when omitted."""

    name: str = Field(min_length=1)
    description: str | None = None
    limits: VhostLimits = Field(default_factory=VhostLimits)


class Permission(_Strict):
    """Configure, write and read regexes on one vhost; an omitted one denies."""

    vhost: str = Field(min_length=1)
    configure: Regex = ""
    write: Regex = ""
    read: Regex = ""


class TopicPermission(_Strict):
    """Topic write and read regexes over routing keys on one exchange."""

    vhost: str = Field(min_length=1)
    exchange: str = Field(default=DEFAULT_EXCHANGE, min_length=1)
    write: Regex = ""
    read: Regex = ""


class MqttBlock(_Strict):
    """MQTT topic filters compiled into the permissions a device needs.

    ``client_ids`` defaults to the user name and the user name followed by
    ``-`` and anything; a final ``*`` means any suffix.
    """

    vhost: str = Field(default="/", min_length=1)
    client_ids: list[str] | None = None
    publish: list[str] = Field(default_factory=list)
    subscribe: list[str] = Field(default_factory=list)
    exchange: str = Field(default=DEFAULT_EXCHANGE, min_length=1)

    def grant(self, username: str) -> mqtt.MqttGrant:
        """Return the compiler's input for the user ``username``."""
        return mqtt.MqttGrant(
            username=username,
            vhost=self.vhost,
            client_ids=tuple(self.client_ids or ()),
            publish=tuple(self.publish),
            subscribe=tuple(self.subscribe),
            exchange=self.exchange,
        )


class User(_Strict):
    """A broker user and everything it is granted."""

    name: str = Field(min_length=1)
    password: SecretStr | None = None
    password_file: str | None = None
    password_hash: SecretStr | None = None
    hashing_algorithm: str = "sha256"
    tags: Tags = Field(default_factory=list)
    limits: UserLimits = Field(default_factory=UserLimits)
    permissions: list[Permission] = Field(default_factory=list)
    topic_permissions: list[TopicPermission] = Field(default_factory=list)
    mqtt: MqttBlock | None = None


class Prune(_Strict):
    """What the provisioner may delete; nothing by default."""

    users: bool = False
    vhosts: bool = False
    protect: list[str] = Field(default_factory=list)
    allow_empty: bool = False


class UsersFile(_Strict):
    """The whole ``users.yaml``; top-level keys starting with ``x-`` hold anchors."""

    model_config = ConfigDict(json_schema_extra={"patternProperties": {"^x-": {}}})

    vhosts: list[Vhost] = Field(default_factory=list)
    users: list[User] = Field(default_factory=list)
    prune: Prune = Field(default_factory=Prune)


def limit_values(limits: UserLimits | VhostLimits) -> dict[str, int]:
    """Return the set limits keyed by the broker's names (``max-connections``)."""
    dumped = limits.model_dump(by_alias=True, exclude_none=True)
    return {name: int(value) for name, value in dumped.items()}
