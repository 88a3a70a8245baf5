"""Form posts need a fresh token bound to the user, its sign-in method, the action and the delivery, from our own
origin, as a form."""

from __future__ import annotations

import pytest

from consumer.web.auth import BASIC, BEARER, Identity
from consumer.web.csrf import FORM, Csrf, form_field, same_origin
from tests.web.fakes import request


class Clock:
    now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


ALICE = Identity("alice", frozenset({"start_deliveries"}), BASIC)


def test_a_token_is_valid_for_its_user_action_and_delivery_until_it_is_too_old() -> None:
    clock = Clock()
    csrf = Csrf(b"secret", max_age_s=60, clock=clock)
    token = csrf.token(ALICE, "confirm", "d")
    assert csrf.valid(token, ALICE, "confirm", "d")
    assert not csrf.valid(token, Identity("bob", ALICE.roles, BASIC), "confirm", "d")
    assert not csrf.valid(token, Identity("alice", ALICE.roles, BEARER), "confirm", "d")
    assert not csrf.valid(token, ALICE, "compute-stats", "d")
    assert not csrf.valid(token, ALICE, "confirm", "e")
    assert not Csrf(b"other secret", clock=clock).valid(token, ALICE, "confirm", "d")
    clock.now += 61
    assert not csrf.valid(token, ALICE, "confirm", "d")


@pytest.mark.parametrize("token", ["", "garbage", "12.", ".abc", "-5.abc", "²."])
def test_malformed_tokens_are_invalid(token: str) -> None:
    assert not Csrf(b"secret").valid(token, ALICE, "confirm", "d")


def post(body: bytes, **headers: str):
    return request("/deliveries/d/confirm", "POST", headers={"content-type": FORM, **headers}, body=body)


def test_a_form_post_needs_the_form_type_our_origin_and_the_token() -> None:
    csrf = Csrf(b"secret")
    good = f"csrf_token={csrf.token(ALICE, 'confirm', 'd')}".encode()
    assert csrf.form_problem(post(good, origin="http://view.test"), ALICE, "confirm", "d") is None
    assert csrf.form_problem(post(good, referer="http://view.test/deliveries/d"), ALICE, "confirm", "d") is None
    assert csrf.form_problem(post(good), ALICE, "confirm", "d") is None  # neither header: the token decides
    assert csrf.form_problem(post(good, origin="https://evil.test"), ALICE, "confirm", "d") == "csrf_origin"
    assert csrf.form_problem(post(good, origin="null"), ALICE, "confirm", "d") == "csrf_origin"
    assert csrf.form_problem(post(b"csrf_token=1.abc"), ALICE, "confirm", "d") == "csrf_token"
    assert csrf.form_problem(post(b""), ALICE, "confirm", "d") == "csrf_token"
    as_text = request("/x", "POST", headers={"content-type": "text/plain"}, body=good)
    assert csrf.form_problem(as_text, ALICE, "confirm", "d") == "csrf_content_type"


def test_origin_and_fields_are_read_from_the_request() -> None:
    assert same_origin(request("/x", headers={"origin": "https://VIEW.test"}))  # a proxy ended TLS: host counts
    assert not same_origin(request("/x", headers={"origin": "http://view.test:8080"}))
    assert form_field(request("/x", body=b"a=1&b=two+words&a=2"), "b") == "two words"
    assert form_field(request("/x", body=b"a=1"), "b") is None
