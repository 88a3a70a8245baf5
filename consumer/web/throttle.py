"""Rate limits on failed sign-ins and on actions, per client address and per user (the `limits` library).

Only failures count against sign-in: browsers send Basic credentials with every request. Once an address or a
user name has failed LOGIN_FAILURES times in a minute, its credentials are not even checked (no bcrypt is spent
on a guesser) until the window moves on; the price is that a guesser can lock a name out for that minute.
Every action (Confirm send, Compute stats) counts: a refused confirmation still writes a Kafka record.
"""

from __future__ import annotations

from limits import RateLimitItem, parse, storage, strategies

LOGIN_FAILURES = "10/minute"
ACTIONS = "30/minute"


class Throttle:
    def __init__(self, login_failures: str = LOGIN_FAILURES, actions: str = ACTIONS) -> None:
        self._limiter = strategies.MovingWindowRateLimiter(storage.MemoryStorage())
        self._login: RateLimitItem = parse(login_failures)
        self._actions: RateLimitItem = parse(actions)

    def login_blocked(self, client: str, user: str | None) -> bool:
        """Too many failed sign-ins lately from this address or for this name."""
        return not all(self._limiter.test(self._login, "login", key) for key in _keys(client, user))

    def login_failed(self, client: str, user: str | None) -> None:
        for key in _keys(client, user):
            self._limiter.hit(self._login, "login", key)

    def action_allowed(self, client: str, user: str) -> bool:
        """Counts the action; False once the address or the user is over the limit."""
        return all([self._limiter.hit(self._actions, "action", key) for key in _keys(client, user)])

    def retry_after(self) -> str:
        """Seconds to wait, for a 429's Retry-After: the longest window."""
        return str(max(self._login.get_expiry(), self._actions.get_expiry()))


def _keys(client: str, user: str | None) -> list[str]:
    return [f"client:{client}", *([f"user:{user}"] if user is not None else [])]
