"""The pure helpers an owner builds its answers with: pages of messages by status and one message's detail."""

from __future__ import annotations

from consumer.core.events import Fact
from consumer.core.status import Bounce, MessageState
from consumer.web.owner_state import BounceRow, message_detail, status_page

RELAYED = int(Fact.RELAYED)
HARD = int(Fact.RELAYED | Fact.HARD_BOUNCE)
SOFT = int(Fact.RELAYED | Fact.SOFT_BOUNCE)


def hard(reason: str) -> MessageState:
    return MessageState(HARD, 1, hard=Bounce(10, 1, "e-h", reason))


def test_a_page_holds_failed_messages_only_and_says_where_to_go_on() -> None:
    messages = [("m1", hard("user_unknown")), ("m2", MessageState(RELAYED, 1)), ("m3", hard("mailbox_full"))]
    page = status_page(iter(messages), efs=False, validity_over=False, status="FAILED", limit=1)
    assert [(r.message_id, r.reason) for r in page.rows] == [("m1", "user_unknown")]
    assert page.next_after == "m1"
    rest = status_page(iter(messages[1:]), efs=False, validity_over=False, status="FAILED", limit=5)
    assert [r.message_id for r in rest.rows] == ["m3"]
    assert rest.next_after is None


def test_a_page_of_one_status_or_of_every_message() -> None:
    messages = [("m1", hard("user_unknown")), ("m2", MessageState(RELAYED, 1)), ("m3", MessageState(0, 0))]
    sent = status_page(iter(messages), efs=False, validity_over=False, status="SENT", limit=5)
    assert [(r.message_id, r.status, r.events, r.changes) for r in sent.rows] == [("m2", "SENT", ["RELAYED"], 1)]
    every = status_page(iter(messages), efs=True, validity_over=False, status=None, limit=5)
    assert [(r.message_id, r.status) for r in every.rows] == [("m1", "FAILED"), ("m2", "PENDING"), ("m3", None)]


def test_a_scan_budget_ends_a_page_early_with_a_cursor() -> None:
    # 10 sent messages then a failure: with a budget of 4 the page is empty but points past what it read.
    messages = [(f"m{i:02}", MessageState(RELAYED, 1)) for i in range(10)] + [("m99", hard("refused"))]
    page = status_page(iter(messages), efs=False, validity_over=False, status="FAILED", limit=50, budget=4)
    assert page.rows == []
    assert page.next_after == "m03"


def test_status_follows_efs_and_the_validity_end() -> None:
    soft = MessageState(SOFT, 1, soft=Bounce(20, 2, "e-s", "mailbox_full"))
    assert status_page(iter([("m", soft)]), efs=False, validity_over=False, status="FAILED", limit=5).rows == []
    assert [r.reason for r in status_page(iter([("m", soft)]), False, True, "FAILED", 5).rows] == ["mailbox_full"]
    assert [r.status for r in status_page(iter([("m", soft)]), True, False, "FAILED", 5).rows] == ["FAILED"]


def test_message_detail_lists_facts_and_bounces_in_time_order() -> None:
    state = MessageState(
        SOFT | int(Fact.HARD_BOUNCE),
        2,
        hard=Bounce(300, 3, "e3", "user_unknown"),
        soft=Bounce(100, 1, "e1", "mailbox_full"),
    )
    detail = message_detail("m7", state, efs=True, validity_over=False)
    assert detail.status == "FAILED"
    assert detail.reason == "user_unknown"
    assert detail.facts == ["RELAYED", "SOFT_BOUNCE", "HARD_BOUNCE"]
    assert detail.bounces == [BounceRow("soft", 100, 1, "mailbox_full"), BounceRow("hard", 300, 3, "user_unknown")]
    assert detail.changes == 2


def test_a_message_never_relayed_has_no_status() -> None:
    detail = message_detail("m", MessageState(0, 0), efs=False, validity_over=False)
    assert detail.status is None and detail.reason is None and detail.facts == []
