"""Wait until the broker can take the provisioner's requests.

At boot the broker refuses connections, then returns 5xx, then serves the
overview before its vhosts are up. Ready means a passing, authenticated
``/api/health/checks/virtual-hosts`` (3.8.10+), or an authenticated
``/api/overview`` on older brokers. A 401 that persists once the broker
responds means wrong credentials, which waiting cannot fix.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from provisioner.client import ManagementClient, api_path
from provisioner.errors import (
    AuthenticationFailed,
    BrokerError,
    BrokerNotReady,
    NotAdministrator,
    RequestRejected,
    TlsVerificationFailed,
)

log = logging.getLogger(__name__)

FIRST_DELAY = 0.25
MAX_DELAY = 3.0
# The management listener can respond shortly before the seeded admin account
# exists, so a 401 is trusted only after it persists this long.
AUTH_GRACE = 5.0
NO_ANSWER_YET = "no answer yet"


def wait_until_ready(
    client: ManagementClient,
    timeout: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Block until the broker is ready.

    Raises BrokerNotReady when ``timeout`` seconds pass first,
    AuthenticationFailed when the login is rejected for ``AUTH_GRACE`` seconds,
    RequestRejected at once on 403 (the login lacks the administrator tag), and
    TlsVerificationFailed at once (the certificate does not change by waiting).
    """
    deadline = clock() + timeout
    delay = FIRST_DELAY
    first_401: float | None = None
    last_reason = NO_ANSWER_YET
    while True:
        try:
            _probe(client)
        except AuthenticationFailed:
            now = clock()
            first_401 = now if first_401 is None else first_401
            if now - first_401 >= AUTH_GRACE:
                raise
            last_reason = "login rejected (HTTP 401)"
        except RequestRejected as error:
            if isinstance(error, NotAdministrator):
                raise
            first_401 = None
            last_reason = str(error)
        except TlsVerificationFailed:
            raise
        except BrokerError as error:
            first_401 = None
            last_reason = str(error)
        else:
            # The serve loop checks readiness on every cycle, and a no-op
            # cycle must log nothing above DEBUG. So "ready" is INFO only
            # when the broker was not ready at the first probe.
            level = logging.DEBUG if last_reason == NO_ANSWER_YET else logging.INFO
            log.log(level, "the broker at %s is ready", client.base_url)
            return

        remaining = deadline - clock()
        if remaining <= 0:
            raise BrokerNotReady(
                f"the broker at {client.base_url} was not ready within {timeout:g} s; "
                f"last problem: {last_reason}. Raise PROVISIONER_WAIT_TIMEOUT if it "
                "starts slowly"
            )
        log.info("waiting for the broker: %s; next check in %.2f s", last_reason, delay)
        sleep(min(delay, remaining))
        delay = min(delay * 2, MAX_DELAY)


def _probe(client: ManagementClient) -> None:
    # The health check needs a valid login too, so one request proves both;
    # brokers before 3.8.10 return 404 and fall back to the overview.
    response = client.request(
        "GET", api_path("health", "checks", "virtual-hosts"), ok=(200, 404), retry=False
    )
    if response.status_code == 404:
        client.get(api_path("overview"), retry=False)
