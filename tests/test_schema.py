"""The committed JSON Schema matches the model, and the example files obey it."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def generated_schema() -> dict:
    output = subprocess.run(
        [sys.executable, "-m", "provisioner", "schema"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    return json.loads(output)


def test_committed_schema_is_current():
    committed = json.loads((REPO / "users.schema.json").read_text(encoding="utf-8"))
    assert committed == generated_schema(), (
        "users.schema.json is stale; run: python -m provisioner schema > users.schema.json"
    )


def test_schema_uses_broker_terms():
    text = json.dumps(generated_schema())
    for term in (
        "max-connections",
        "max-channels",
        "max-queues",
        "configure",
        "topic_permissions",
    ):
        assert term in text


def test_schema_forbids_unknown_keys():
    schema = generated_schema()
    assert schema["additionalProperties"] is False
    assert schema["$defs"]["User"]["additionalProperties"] is False
