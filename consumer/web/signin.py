"""Who a request is, with failed sign-ins seen: logged, counted and rate limited (consumer/web/throttle.py).

A failed sign-in is one `web_login_failed` line (address, method, the name a Basic request gave; never the
password or token) and `sendtrack_web_failed_logins_total{method}`. Past the limit, credentials are not
checked at all and the answer is 429.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from consumer.ops import logging as logs
from consumer.ops.exchange import Request
from consumer.web.auth import Auth, Identity
from consumer.web.throttle import Throttle

THROTTLED = "throttled"  # what identify() gives instead of an identity once a client or name is over the limit


class SignIn:
    def __init__(self, auth: Auth, throttle: Throttle, registry: CollectorRegistry) -> None:
        self._auth = auth
        self._throttle = throttle
        self._log = logs.get("sendtrack.web.signin")
        self._failed = Counter(
            "sendtrack_web_failed_logins", "Sign-ins the view refused (bad credentials)", ["method"], registry=registry
        )

    def identify(self, request: Request) -> Identity | str | None:
        """The verified identity; None without valid credentials; THROTTLED when they were not even checked."""
        claimed = self._auth.claimed(request.headers)
        client = client_address(request)
        if claimed is not None and self._throttle.login_blocked(client, claimed[1]):
            self._refused(client, claimed, "throttled")
            return THROTTLED
        identity = self._auth.identify(request.headers)
        if identity is None and claimed is not None:
            self._throttle.login_failed(client, claimed[1])
            self._refused(client, claimed, "bad_credentials")
        return identity

    def _refused(self, client: str, claimed: tuple[str, str | None], reason: str) -> None:
        method, user = claimed
        self._failed.labels(method).inc()
        self._log.warning("web_login_failed", client=client, method=method, user=user, reason=reason)


def client_address(request: Request) -> str:
    """The peer's address without its port: what limits count per client."""
    return request.client.rsplit(":", 1)[0]
