"""Form posts need a fresh token bound to the user, from our own origin, as a form."""

from __future__ import annotations

import pytest

from consumer.web.csrf import FORM, Csrf, form_field, same_origin
from tests.web.fakes import request


class Clock:
    now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_token_is_valid_for_its_user_until_it_is_too_old() -> None:
    clock = Clock()
    csrf = Csrf(b"secret", max_age_s=60, clock=clock)
    token = csrf.token("alice")
    assert csrf.valid("alice", token)
    assert not csrf.valid("bob", token)
    assert not Csrf(b"other secret", clock=clock).valid("alice", token)
    clock.now += 61
    assert not csrf.valid("alice", token)


@pytest.mark.parametrize("token", ["", "garbage", "12.", ".abc", "-5.abc"])
def test_malformed_tokens_are_invalid(token: str) -> None:
    assert not Csrf(b"secret").valid("alice", token)


def post(body: bytes, **headers: str):
    return request("/deliveries/d/confirm", "POST", headers={"content-type": FORM, **headers}, body=body)


def test_a_form_post_needs_the_form_type_our_origin_and_the_token() -> None:
    csrf = Csrf(b"secret")
    good = f"csrf_token={csrf.token('alice')}".encode()
    assert csrf.form_problem(post(good, origin="http://view.test"), "alice") is None
    assert csrf.form_problem(post(good, referer="http://view.test/deliveries/d"), "alice") is None
    assert csrf.form_problem(post(good), "alice") is None  # neither header: the token decides
    assert csrf.form_problem(post(good, origin="https://evil.test"), "alice") == "csrf_origin"
    assert csrf.form_problem(post(good, origin="null"), "alice") == "csrf_origin"
    assert csrf.form_problem(post(b"csrf_token=1.abc"), "alice") == "csrf_token"
    assert csrf.form_problem(post(b""), "alice") == "csrf_token"
    as_text = request("/x", "POST", headers={"content-type": "text/plain"}, body=good)
    assert csrf.form_problem(as_text, "alice") == "csrf_content_type"


def test_origin_and_fields_are_read_from_the_request() -> None:
    assert same_origin(request("/x", headers={"origin": "https://VIEW.test"}))  # a proxy ended TLS: host counts
    assert not same_origin(request("/x", headers={"origin": "http://view.test:8080"}))
    assert form_field(request("/x", body=b"a=1&b=two+words&a=2"), "b") == "two words"
    assert form_field(request("/x", body=b"a=1"), "b") is None
