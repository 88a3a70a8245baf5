"""Cross-site request forgery: a browser sends a user's Basic credentials to any form that posts to us.

Form posts carry a token bound to what it may do: an HMAC of the time it was issued, the authentication
method, the user, the action and the delivery, keyed by a random secret (`sendtrack_secret_file` of the web
configuration, shared by the instances; never derived from the file, so reading the file mints nothing).
A token is good for one action on one delivery for MAX_AGE_S. An Origin or Referer, when the browser sends
one, must be our own host. JSON API posts need no token: they must say `Content-Type: application/json`,
which no cross-site form can send and which a cross-site script cannot send without a CORS preflight we never grant.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

from consumer.ops.exchange import Request, count
from consumer.web.auth import Identity

FIELD = "csrf_token"
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
MAX_AGE_S = 2 * 3600  # a page left open that long is reloaded before it acts


class Csrf:
    def __init__(self, secret: bytes, max_age_s: float = MAX_AGE_S, clock: Callable[[], float] = time.time) -> None:
        self._secret = secret
        self._max_age_s = max_age_s
        self._clock = clock

    def token(self, identity: Identity, action: str, delivery_id: str) -> str:
        issued = str(int(self._clock()))
        return f"{issued}.{self._mac(issued, identity, action, delivery_id)}"

    def valid(self, token: str, identity: Identity, action: str, delivery_id: str) -> bool:
        issued, _, mac = token.partition(".")
        age = count(issued)
        if age is None or self._clock() - age > self._max_age_s:
            return False
        return hmac.compare_digest(mac, self._mac(issued, identity, action, delivery_id))

    def form_problem(self, request: Request, identity: Identity, action: str, delivery_id: str) -> str | None:
        """Why a form post is refused, or None: the denial reason of the audit."""
        if media_type(request) != FORM:
            return "csrf_content_type"
        if not same_origin(request):
            return "csrf_origin"
        if not self.valid(form_field(request, FIELD) or "", identity, action, delivery_id):
            return "csrf_token"
        return None

    def _mac(self, issued: str, identity: Identity, action: str, delivery_id: str) -> str:
        bound = "\0".join(("csrf", issued, identity.method, identity.user, action, delivery_id))
        return hmac.new(self._secret, bound.encode(), hashlib.sha256).hexdigest()


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def same_origin(request: Request) -> bool:
    """Origin (or else Referer) names our host; a request with neither rests on the token alone.

    Hosts are compared, not schemes, so a proxy that ends TLS in front of us does not break forms.
    """
    source = request.headers.get("origin") or request.headers.get("referer")
    if source is None:
        return True
    return urlsplit(source).netloc.lower() == request.headers.get("host", "").lower()


def form_field(request: Request, name: str) -> str | None:
    values = parse_qs(request.body.decode("utf-8", errors="replace")).get(name)
    return values[0] if values else None
