"""The one HTTP client for RabbitMQ's management API.

Every request goes through ``ManagementClient.request``: path segments are
percent-encoded exactly once, each request has a timeout, transient failures
(connection errors, timeouts, 5xx) are retried with backoff, and every
``requests`` failure is translated here into the provisioner's own errors.
Headers and bodies are never logged, since they carry credentials and hashes.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import quote

import requests
import tenacity

from provisioner import redact
from provisioner.errors import (
    AuthenticationFailed,
    BrokerError,
    BrokerUnavailable,
    NotAdministrator,
    RequestRejected,
    TlsVerificationFailed,
)
from provisioner.settings import Settings

log = logging.getLogger(__name__)

OK = (200, 201, 204)
_REASON_LIMIT = 300


def api_path(*segments: str) -> str:
    """Build ``/api/...`` with each segment percent-encoded once (``/`` is ``%2F``)."""
    return "/api/" + "/".join(quote(segment, safe="") for segment in segments)


class ManagementClient:
    """Session-based client that retries what can succeed on retry."""

    def __init__(
        self,
        settings: Settings,
        *,
        session: requests.Session | None = None,
        attempts: int = 6,
        max_delay: float = 5.0,
    ) -> None:
        self.base_url = settings.management_url
        self.username = settings.login
        self.credential_source = settings.credential_source()
        self.timeout = settings.request_timeout
        self.attempts = attempts
        self.max_delay = max_delay
        self.request_count = 0
        self.session = session or requests.Session()
        # Proxies and .netrc from the environment would silently redirect or
        # re-authenticate requests meant for the local broker.
        self.session.trust_env = False
        self.session.verify = settings.tls_verify
        self.session.headers["Content-Type"] = "application/json"
        self.set_password(settings.login_password)

    def set_password(self, password: str) -> None:
        """Log in with ``password`` from now on (after rotating our own account)."""
        redact.register_basic_auth(self.username, password)
        # requests encodes str credentials as Latin-1 and fails on other
        # characters; the broker decodes Basic credentials as UTF-8.
        self.session.auth = requests.auth.HTTPBasicAuth(
            self.username.encode("utf-8"), password.encode("utf-8")
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        ok: Collection[int] = OK,
        retry: bool = True,
        headers: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """Send one request; raise a BrokerError subclass unless the status is in ``ok``."""
        attempts = self.attempts if retry else 1
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(attempts),
            # 0.2 s, 0.4 s, 0.8 s ... up to max_delay, with jitter so that sidecars
            # of a cluster do not retry in step.
            wait=tenacity.wait_exponential(multiplier=0.2, max=self.max_delay)
            + tenacity.wait_random(0, 0.2),
            retry=tenacity.retry_if_exception_type(BrokerUnavailable),
            before_sleep=_log_retry,
            reraise=True,
        )
        return retrying(self._send, method, path, body, ok, headers)

    def get(self, path: str, *, ok: Collection[int] = OK, retry: bool = True) -> Any:
        """GET ``path`` and return the decoded JSON body.

        The body is decoded straight from its bytes: decoding it to text first
        would keep a second copy of a definitions body of megabytes.
        """
        response = self.request("GET", path, ok=ok, retry=retry)
        try:
            return json.loads(response.content)
        except ValueError:
            raise BrokerError(
                f"GET {path} returned a body that is not JSON",
                method="GET",
                path=path,
                status=response.status_code,
            ) from None

    def put(self, path: str, body: Any) -> requests.Response:
        """PUT a JSON body to ``path``."""
        return self.request("PUT", path, body=body)

    def post(self, path: str, body: Any) -> requests.Response:
        """POST a JSON body to ``path``."""
        return self.request("POST", path, body=body)

    def delete(
        self,
        path: str,
        *,
        missing_ok: bool = True,
        headers: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """DELETE ``path``; a 404 counts as done unless ``missing_ok`` is false."""
        ok = (*OK, 404) if missing_ok else OK
        return self.request("DELETE", path, ok=ok, headers=headers)

    def _send(
        self,
        method: str,
        path: str,
        body: Any,
        ok: Collection[int],
        headers: Mapping[str, str] | None,
    ) -> requests.Response:
        self.request_count += 1
        url = self.base_url + path
        try:
            response = self.session.request(
                method, url, json=body, timeout=self.timeout, headers=headers
            )
        except requests.Timeout:
            raise BrokerUnavailable(
                f"{method} {path} timed out after {self.timeout:g} s",
                method=method,
                path=path,
            ) from None
        except requests.exceptions.SSLError as error:
            raise _tls_error(method, path, error) from None
        except requests.ConnectionError as error:
            raise BrokerUnavailable(
                f"{method} {path} failed: cannot connect to {self.base_url} ({_cause(error)})",
                method=method,
                path=path,
            ) from None
        except requests.exceptions.ChunkedEncodingError:
            # The connection closed part way through the response body, as it
            # does when the broker stops mid-answer; a new request can succeed.
            raise BrokerUnavailable(
                f"{method} {path} failed: the connection closed before the whole "
                "response arrived",
                method=method,
                path=path,
            ) from None
        except requests.RequestException as error:
            raise BrokerError(
                f"{method} {path} failed: {type(error).__name__}",
                method=method,
                path=path,
            ) from None
        log.debug("%s %s -> %s", method, path, response.status_code)
        if response.status_code in ok:
            return response
        raise self._translate(method, path, response)

    def _translate(
        self, method: str, path: str, response: requests.Response
    ) -> BrokerError:
        status = response.status_code
        reason = _reason(response)
        # RabbitMQ 3.10 returns 401 "Not administrator user" or "Not management
        # user" (later versions 403) to a valid login without the tag.
        lowered = reason.lower()
        if status == 403 or (
            status == 401
            and ("not administrator" in lowered or "not management" in lowered)
        ):
            return NotAdministrator(
                f"user {self.username!r} logged in but is not an administrator "
                f"(HTTP {status} on {method} {path}); give it the administrator tag "
                f"or log in as another user (the login comes from {self.credential_source})",
                method=method,
                path=path,
                status=status,
            )
        if status == 401:
            return AuthenticationFailed(
                f"the broker rejected the login of user {self.username!r} "
                f"(HTTP 401 on {method} {path}); the credentials come from "
                f"{self.credential_source}; check that user name and password",
                method=method,
                path=path,
                status=status,
            )
        if status >= 500:
            return BrokerUnavailable(
                f"{method} {path} failed with HTTP {status}{reason}",
                method=method,
                path=path,
                status=status,
            )
        if status in (404, 405):
            detail = "the broker has no such object or endpoint"
        else:
            detail = "the broker rejected the request"
        return RequestRejected(
            f"{method} {path} failed with HTTP {status}: {detail}{reason}",
            method=method,
            path=path,
            status=status,
        )


def _reason(response: requests.Response) -> str:
    try:
        payload = response.json()
    except ValueError:
        return ""
    if not isinstance(payload, Mapping):
        return ""
    reason = _as_text(payload.get("reason") or payload.get("error") or "")
    if not reason:
        return ""
    return " (" + redact.redact(reason)[:_REASON_LIMIT] + ")"


def _as_text(value: Any) -> str:
    # Erlang strings arrive as lists of character codes, often nested in a
    # term such as ["invalid_regexp", [40, 63, ...]].
    if isinstance(value, list):
        if value and all(
            isinstance(item, int) and 0 <= item < 0x110000 for item in value
        ):
            return "".join(chr(item) for item in value)
        return ": ".join(_as_text(item) for item in value)
    return str(value)


def _cause(error: requests.ConnectionError) -> str:
    text = str(error)
    for marker in (
        "Connection refused",
        "Name or service not known",
        "Connection reset",
    ):
        if marker in text:
            return marker.lower()
    if "RemoteDisconnected" in text:
        return "the connection closed without a response"
    return type(error).__name__


def _tls_error(
    method: str, path: str, error: requests.exceptions.SSLError
) -> BrokerError:
    if _verification_failed(error):
        return TlsVerificationFailed(
            f"{method} {path} failed: the broker's TLS certificate failed "
            "verification; set PROVISIONER_CA_BUNDLE to the CA that signed it "
            "(verification stays on by default)",
            method=method,
            path=path,
        )
    # A broker that closes the socket during the handshake (it is starting or
    # stopping) raises an SSLError too; that can succeed on retry.
    return BrokerUnavailable(
        f"{method} {path} failed: the TLS handshake with the broker did not complete",
        method=method,
        path=path,
    )


def _verification_failed(error: BaseException) -> bool:
    # requests wraps urllib3's error, which wraps the ssl module's; walk the
    # chain instead of matching message text.
    seen: set[int] = set()
    pending: list[object] = [error]
    while pending:
        item = pending.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        if isinstance(item, ssl.SSLCertVerificationError):
            return True
        seen.add(id(item))
        pending += [item.__cause__, item.__context__, getattr(item, "reason", None)]
        pending += list(item.args)
    return False


def _log_retry(state: tenacity.RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    delay = state.next_action.sleep if state.next_action else 0.0
    log.warning(
        "%s; retrying in %.1f s (attempt %d failed)",
        error,
        delay,
        state.attempt_number,
    )
