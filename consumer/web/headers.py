"""The security headers of every answer the view gives, its own or an owner's it passes on.

Applied once, where the view answers (`WebApp.handle`), so a forwarded answer carries ours and not the owner's:
the owner may be another version, or anything that answered as a peer.
"""

from __future__ import annotations

from dataclasses import replace

from consumer.ops.exchange import Response

POLICY = "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
HSTS = "max-age=31536000"  # a year, as browsers expect; only ever sent over TLS
_OURS = [
    ("Content-Security-Policy", POLICY),
    ("X-Content-Type-Options", "nosniff"),  # JSON and CSV too: never sniffed into HTML
    ("Referrer-Policy", "same-origin"),
]
_REPLACED = {name.lower() for name, _ in _OURS} | {"set-cookie", "strict-transport-security"}  # the view sets no cookie


def secured(response: Response, tls: bool) -> Response:
    """The response with our security headers in place of any of the same name, and no-store unless it says."""
    kept = [(k, v) for k, v in response.headers if k.lower() not in _REPLACED]
    if not any(k.lower() == "cache-control" for k, _ in kept):
        kept.append(("Cache-Control", "no-store"))
    return replace(response, headers=[*kept, *_OURS, *([("Strict-Transport-Security", HSTS)] if tls else [])])
