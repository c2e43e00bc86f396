"""Validation of users.yaml: each problem is named with file, line and key."""

import os
import textwrap
from pathlib import Path

import pytest

from provisioner.errors import InvalidInput
from provisioner.validate import load_users_file, read_password_file

ENV = {"PW": "secret-value-1"}


def load(tmp_path: Path, text: str, env=None):
    path = tmp_path / "users.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return load_users_file(path, ENV if env is None else env)


def problems(tmp_path: Path, text: str, env=None) -> list[str]:
    with pytest.raises(InvalidInput) as caught:
        load(tmp_path, text, env)
    prefix = str(tmp_path) + "/"
    return [str(problem).replace(prefix, "") for problem in caught.value.problems]


def test_issue_example_is_valid(tmp_path):
    parsed = load(
        tmp_path,
        r"""
        vhosts:
          - name: /
          - name: telemetry
            description: Sensor traffic
            limits: {max-connections: 200, max-queues: 1000}
        users:
          - name: sensor-01
            password: ${PW}
            tags: []
            limits: {max-connections: 2, max-channels: 4}
            permissions:
              - {vhost: telemetry, configure: "^$", write: "^amq\\.topic$", read: "^$"}
            topic_permissions:
              - {vhost: telemetry, exchange: amq.topic, write: "^sensors\\.sensor-01\\..+$", read: "^$"}
        prune:
          users: false
          protect: [ops]
        """,
    )
    user = parsed.users[0]
    assert user.password is not None
    assert user.password.get_secret_value() == "secret-value-1"
    assert user.permissions[0].write == r"^amq\.topic$"
    assert parsed.prune.protect == ["ops"]


def test_omitted_grants_mean_deny(tmp_path):
    parsed = load(
        tmp_path, "users: [{name: a, password: x, permissions: [{vhost: /}]}]"
    )
    permission = parsed.users[0].permissions[0]
    assert (permission.configure, permission.write, permission.read) == ("", "", "")


def test_tags_string_form(tmp_path):
    parsed = load(
        tmp_path, "users: [{name: a, password: x, tags: 'management, monitoring'}]"
    )
    assert parsed.users[0].tags == ["management", "monitoring"]


def test_yaml_boolean_name_reported_with_quote_hint(tmp_path):
    found = problems(tmp_path, "users:\n  - name: no\n    password: x\n")
    assert found == [
        "users.yaml:2:11: users[0].name: expected a string, but YAML reads no as the "
        'boolean false; quote it: name: "no"'
    ]


def test_numeric_password_not_echoed(tmp_path):
    found = problems(tmp_path, "users:\n  - name: a\n    password: 0123\n")
    assert len(found) == 1
    assert "users[0].password" in found[0]
    assert "123" not in found[0]
    assert "quote it" in found[0]


def test_all_problems_reported_together(tmp_path):
    found = problems(
        tmp_path,
        """
        vhosts:
          - name: telemetry
            limits: {max-queue: 5}
        users:
          - name: a
            password: ${MISSING}
          - name: b
            password: x
            permisions: []
          - name: c
            password: x
            permissions:
              - {vhost: nowhere, write: "(unclosed"}
        """,
    )
    joined = "\n".join(found)
    assert "MISSING is not set" in joined
    assert "did you mean 'max-queues'" in joined
    assert "did you mean 'permissions'" in joined
    assert "vhost 'nowhere' is not declared" in joined
    assert "does not compile" in joined
    assert len(found) == 5


def test_problem_names_line_and_column(tmp_path):
    found = problems(
        tmp_path, "users:\n  - name: a\n    password: x\n    colour: red\n"
    )
    assert found[0].startswith("users.yaml:4:5: users[0].colour: unknown key 'colour'")


def test_duplicate_user_names(tmp_path):
    found = problems(
        tmp_path, "users:\n  - {name: a, password: x}\n  - {name: a, password: y}\n"
    )
    assert len(found) == 2
    assert all("duplicate name 'a'" in p for p in found)


def test_duplicate_yaml_keys_not_silently_dropped(tmp_path):
    found = problems(
        tmp_path, "users:\n  - name: a\n    password: x\n    password: y\n"
    )
    assert "duplicate key 'password'" in found[0]


def test_root_vhost_needs_no_declaration(tmp_path):
    parsed = load(
        tmp_path, "users: [{name: a, password: x, permissions: [{vhost: /}]}]"
    )
    assert parsed.users[0].permissions[0].vhost == "/"


def test_user_limit_that_belongs_to_vhosts(tmp_path):
    found = problems(
        tmp_path, "users: [{name: gw, password: x, limits: {max-queues: 10}}]"
    )
    assert "unknown key 'max-queues'" in found[0]
    assert "allowed: max-connections, max-channels" in found[0]


def test_negative_limit_below_minus_one(tmp_path):
    found = problems(
        tmp_path, "users: [{name: gw, password: x, limits: {max-channels: -5}}]"
    )
    assert "-1 (no limit)" in found[0]


def test_password_fallback_refused(tmp_path):
    found = problems(tmp_path, "users: [{name: a, password: '${PW:-guest}'}]")
    assert "fallback" in found[0]
    assert "guest" not in found[0]


def test_default_allowed_outside_passwords(tmp_path):
    parsed = load(tmp_path, "vhosts: [{name: '${SITE:-plant-a}'}]")
    assert parsed.vhosts[0].name == "plant-a"


def test_literal_dollar_brace_escape(tmp_path):
    parsed = load(tmp_path, "vhosts: [{name: a, description: 'cost $${X}'}]")
    assert parsed.vhosts[0].description == "cost ${X}"


def test_password_sources_exclusive(tmp_path):
    found = problems(tmp_path, "users: [{name: a, password: x, password_file: f}]")
    assert "exactly one of password, password_file and password_hash" in found[0]


def test_no_password_source(tmp_path):
    found = problems(tmp_path, "users: [{name: a}]")
    assert "has none" in found[0]


def test_password_file_trailing_newline_stripped(tmp_path):
    (tmp_path / "pw").write_text("from-file\n", encoding="utf-8")
    parsed = load(tmp_path, "users: [{name: a, password_file: pw}]")
    assert parsed.users[0].password_file == "pw"


def test_unreadable_password_file_names_path(tmp_path):
    found = problems(tmp_path, "users: [{name: a, password_file: missing.txt}]")
    assert "missing.txt" in found[0]
    assert "cannot be read" in found[0]


def test_yaml_syntax_error_has_line_and_column(tmp_path):
    found = problems(tmp_path, "users:\n  - name: [a\n")
    assert found[0].startswith("users.yaml:")
    assert "invalid YAML" in found[0]


def test_top_level_list_rejected(tmp_path):
    found = problems(tmp_path, "- a\n- b\n")
    assert "must be a mapping" in found[0]


def test_empty_file_is_empty_declaration(tmp_path):
    parsed = load(tmp_path, "")
    assert parsed.users == []
    assert parsed.vhosts == []


def test_alias_bomb_rejected(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 8):
        lines.append(
            f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 10) + "]"
        )
    lines.append("users: *a7")
    found = problems(tmp_path, "\n".join(lines) + "\n")
    assert "expands to more than" in found[0]


def test_merge_keys_share_grants(tmp_path):
    parsed = load(
        tmp_path,
        """
        base: &base {vhost: /, write: "^amq\\\\.topic$"}
        users:
          - name: a
            password: x
            permissions: [{<<: *base, read: "^r$"}]
        """.replace("base: &base", "x-base: &base"),
    )
    permission = parsed.users[0].permissions[0]
    assert permission.read == "^r$"


def test_mqtt_block_compiles(tmp_path):
    parsed = load(
        tmp_path,
        "users: [{name: room, password: x, mqtt: {publish: [/priv/room/sample]}}]",
    )
    assert parsed.users[0].mqtt is not None
    assert parsed.users[0].mqtt.publish == ["/priv/room/sample"]


def test_mqtt_bad_filter_named_with_its_place(tmp_path):
    found = problems(
        tmp_path,
        "users:\n  - name: d\n    password: x\n    mqtt:\n      publish: [ok/topic, 'a/#/b']\n",
    )
    assert len(found) == 1
    assert found[0].startswith("users.yaml:5:")
    assert "users[0].mqtt.publish[1]" in found[0]
    assert "'#' must be the last level" in found[0]


def test_mqtt_dot_in_topic_rejected(tmp_path):
    found = problems(
        tmp_path, "users: [{name: d, password: x, mqtt: {subscribe: [a.b/c]}}]"
    )
    assert "level separator" in found[0]


def test_mqtt_block_and_hand_written_permission_conflict(tmp_path):
    found = problems(
        tmp_path,
        """
        users:
          - name: d
            password: x
            mqtt: {publish: [a/b]}
            permissions: [{vhost: /, read: ".*"}]
            topic_permissions: [{vhost: /, write: "^x$"}]
        """,
    )
    assert len(found) == 2
    assert "both an mqtt block and a hand-written permission" in found[0]
    assert "hand-written topic permission" in found[1]


def test_mqtt_client_ids_overlap_across_users(tmp_path):
    found = problems(
        tmp_path,
        """
        users:
          - {name: sensor-01, password: x, mqtt: {subscribe: [a]}}
          - {name: sensor-01-b, password: x, mqtt: {subscribe: [b]}}
        """,
    )
    assert len(found) == 1
    assert "overlap" in found[0]
    assert "'sensor-01-*'" in found[0]


def test_mqtt_distinct_client_ids_accepted(tmp_path):
    parsed = load(
        tmp_path,
        """
        users:
          - {name: sensor-01, password: x, mqtt: {client_ids: [sensor-01], subscribe: [a]}}
          - {name: sensor-01-b, password: x, mqtt: {subscribe: [b]}}
        """,
    )
    assert len(parsed.users) == 2


def test_slash_in_topic_regex_warns_with_routing_form(tmp_path, caplog):
    load(
        tmp_path,
        "users: [{name: s, password: x, topic_permissions: [{vhost: /, write: '^site42/.*'}]}]",
    )
    assert "write ^site42\\..* instead" in caplog.text
    assert "users[0].topic_permissions[0].write" in caplog.text


def test_md5_hash_accepted_with_one_warning(tmp_path, caplog):
    from provisioner.passwords import HashingAlgorithm, hash_password
    from provisioner.runner import load_declared
    from provisioner.settings import Settings

    digest = hash_password("legacy-pw", HashingAlgorithm.MD5)
    path = tmp_path / "users.yaml"
    path.write_text(
        "users:\n"
        f"  - {{name: old1, password_hash: '{digest}', hashing_algorithm: md5}}\n"
        "  - {name: new1, password: fine-pw}\n",
        encoding="utf-8",
    )
    with caplog.at_level("WARNING"):
        load_declared(Settings(users_file=path), environ={})
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "old1" in warnings[0].getMessage()
    assert "md5" in warnings[0].getMessage()
    assert digest not in caplog.text


def test_mqtt_every_bad_filter_reported(tmp_path):
    found = problems(
        tmp_path,
        "users:\n  - name: d\n    password: x\n    mqtt:\n"
        "      publish: [x.y, ok]\n      subscribe: ['p/#/q', 'r+']\n",
    )
    assert len(found) == 3
    assert "mqtt.publish[0]" in found[0]
    assert "mqtt.subscribe[0]" in found[1]
    assert "mqtt.subscribe[1]" in found[2]


def test_problems_listed_in_file_order(tmp_path):
    found = problems(
        tmp_path,
        "users:\n  - name: a\n    colour: red\n    password: ${UNSET_ONE}\n",
    )
    assert found[0].startswith("users.yaml:3:")
    assert found[1].startswith("users.yaml:4:")


@pytest.mark.parametrize(
    "regex",
    ["(?a)^x$", "(?u)x", r"\N{DIGIT ONE}", r"^\u0041$", r"^\U0001F600$", "^a{,3}$"],
)
def test_python_only_regex_rejected(tmp_path, regex):
    text = f"users: [{{name: r, password: x, permissions: [{{vhost: /, read: '{regex}'}}]}}]"
    found = problems(tmp_path, text)
    assert len(found) == 1
    assert "users[0].permissions[0].read" in found[0]


@pytest.mark.parametrize("written", ["010", "0x10", "1:30", "1_000"])
def test_converted_integer_limit_rejected(tmp_path, written):
    found = problems(
        tmp_path,
        f"users: [{{name: a, password: x, limits: {{max-connections: {written}}}}}]",
    )
    assert len(found) == 1
    assert f"YAML reads {written} as the number" in found[0]


def test_control_character_in_name_rejected(tmp_path):
    found = problems(tmp_path, 'users: [{name: "a\\u202eb", password: x}]')
    assert "U+202E" in found[0]


def test_password_file_must_be_regular(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    found = problems(tmp_path, "users: [{name: a, password_file: fifo}]")
    assert "not a regular file" in found[0]


def test_password_file_keeps_inner_carriage_return(tmp_path):
    (tmp_path / "pw").write_bytes(b"\xef\xbb\xbfab\rcd\n")
    assert read_password_file("pw", tmp_path) == "ab\rcd"


def test_invalid_reference_in_password_hidden(tmp_path):
    found = problems(tmp_path, "users: [{name: a, password: '${SECRET PART}'}]")
    assert "SECRET PART" not in found[0]
    assert "(hidden)" in found[0]
