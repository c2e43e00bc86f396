"""Configure logging once for the CLI: text or JSON lines on stderr.

Every handler gets the redacting filter, so a registered secret is masked
even if it reaches a message or a traceback by mistake.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from provisioner.redact import RedactingFilter


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_text:
            entry["traceback"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str, fmt: str) -> None:
    """Send the package's logs to stderr at ``level`` in ``fmt`` (text or json)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # urllib3 logs each connection at DEBUG; its lines carry no secrets but
    # would bury ours.
    logging.getLogger("urllib3").setLevel(
        max(logging.INFO, logging.getLevelName(level))
    )
