"""Amazon SES event publishing records (https://docs.aws.amazon.com/ses/latest/dg/event-publishing-retrieving-
firehose-contents.html): one JSON object per source record, or the SNS notification that wraps one.

The platform's ids come from the message tags (`mail.tags`, lists of strings) named by IdKeys; the message id
falls back to SES's `mail.messageId`. One SES message can have several recipients while the platform has one
message id per recipient: when `mail.destination` lists more than one address, each recipient's message id is
`<base>/<address in lower case>` (base: the message-id tag, else mail.messageId), the same in every event of
that message. Opens and clicks of such a message name no recipient, so they cannot be mapped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from consumer.ingest.classifier import Classifier, Kind
from consumer.ingest.event_ids import event_id
from consumer.ingest.formats.common import (
    NOT_COMPLAINTS,
    IdKeys,
    Ids,
    JsonFormat,
    Mapped,
    Node,
    UnmappableRecord,
    event,
    failure,
    parse_json,
    platform_id,
    require_ids,
    unknown_type,
)

PREFIX = "ses"
_BOUNCE_VERDICTS: dict[str, Kind] = {"Permanent": "hard", "Transient": "soft"}  # "Undetermined": classify
_NO_STATUS = frozenset({"Subscription"})  # a change of topic preferences, not a delivery status


class _Message:
    """One SES message: its ids, its recipients and how each recipient's events are identified."""

    def __init__(self, rec: Node, event_type: str, keys: IdKeys) -> None:
        self.rec = rec
        self.event_type = event_type
        self.keys = keys
        self.mail = rec.child("mail")
        self.ses_id = self.mail.required_text("messageId", 256)
        self.destination = self.mail.strings("destination")
        self.single = len(self.destination) == 1
        tags = self.mail.optional_child("tags")
        self.delivery_id = _tag(tags, keys.delivery_id)
        self.base_id = _tag(tags, keys.message_id) or platform_id(self.ses_id, "mail.messageId")

    def ids(self, address: str) -> Ids:
        message_id = self.base_id
        if not self.single:
            message_id = platform_id(f"{self.base_id}/{_address_key(address)}", "message_id")
        return require_ids(self.delivery_id, message_id, self.keys, "mail.tags")

    def event_id(self, *parts: str | int | None) -> str:
        return event_id(PREFIX, self.ses_id, self.event_type, *parts)


class Ses(JsonFormat):
    name = "ses"

    def __init__(self, ids: IdKeys, classifier: Classifier) -> None:
        super().__init__(ids, classifier)
        self._handlers: dict[str, Callable[[_Message], list[Mapped]]] = {
            "Send": self._send,
            "Delivery": self._delivery,
            "Bounce": self._bounce,
            "Complaint": self._complaint,
            "DeliveryDelay": self._delay,
            "Reject": self._not_sent,
            "RenderingFailure": self._not_sent,
            "Open": self._open,
            "Click": self._click,
        }

    def map_record(self, record: Any) -> list[Mapped]:
        rec = _unwrap_sns(Node.of(record, ""))
        key = "eventType" if rec.has("eventType") else "notificationType"  # the latter without event publishing
        event_type = rec.required_text(key, 64).replace(" ", "")  # SNS docs also spell it "Rendering Failure"
        if event_type in _NO_STATUS:
            return []
        handler = self._handlers.get(event_type)
        if handler is None:
            raise unknown_type(key, event_type, [*self._handlers, *_NO_STATUS])
        return handler(_Message(rec, event_type, self.ids))

    def _send(self, msg: _Message) -> list[Mapped]:
        at = msg.mail.iso_time("timestamp")
        return [_plain(msg, "RELAYED", at, address) for address in msg.destination]

    def _delivery(self, msg: _Message) -> list[Mapped]:
        delivery = msg.rec.child("delivery")
        at = delivery.iso_time("timestamp")
        return [_plain(msg, "DELIVERED", at, address) for address in delivery.strings("recipients")]

    def _bounce(self, msg: _Message) -> list[Mapped]:
        bounce = msg.rec.child("bounce")
        at = bounce.iso_time("timestamp")
        bounce_type = bounce.text("bounceType", 64)
        hint = f"ses:{bounce_type}/{bounce.text('bounceSubType', 64)}"
        feedback_id = bounce.text("feedbackId", 256)
        kind = _BOUNCE_VERDICTS.get(bounce_type or "")
        out = []
        for recipient in bounce.children("bouncedRecipients"):
            address = recipient.required_text("emailAddress")
            verdict = self.classify(None, recipient.text("status", 32), recipient.text("diagnosticCode", None), hint)
            eid = msg.event_id(address, feedback_id, at)
            out.append(failure(eid, msg.ids(address), at, verdict, source_kind=kind, address=address))
        return out

    def _complaint(self, msg: _Message) -> list[Mapped]:
        complaint = msg.rec.child("complaint")
        at = complaint.iso_time("timestamp")
        feedback_id = complaint.text("feedbackId", 256)
        feedback_type = (complaint.text("complaintFeedbackType", 64) or "").casefold()
        suppressed = complaint.text("complaintSubType", 64) == "OnAccountSuppressionList"
        if feedback_type in NOT_COMPLAINTS and not suppressed:
            return []
        out = []
        for recipient in complaint.children("complainedRecipients"):
            address = recipient.required_text("emailAddress")
            eid = msg.event_id(address, feedback_id, at)
            if suppressed:  # SES did not send: the address is on the account's suppression list after a complaint
                verdict = self.classify(None, None, None, "ses:Complaint/OnAccountSuppressionList")
                out.append(failure(eid, msg.ids(address), at, verdict, source_kind="hard", address=address))
            else:
                out.append(Mapped(event(eid, msg.ids(address), "COMPLAINT", at, address=address)))
        return out

    def _delay(self, msg: _Message) -> list[Mapped]:
        delay = msg.rec.child("deliveryDelay")
        at = delay.iso_time("timestamp")
        hint = f"ses-delay:{delay.text('delayType', 64)}"
        out = []
        for recipient in delay.children("delayedRecipients"):
            address = recipient.required_text("emailAddress")
            verdict = self.classify(None, recipient.text("status", 32), recipient.text("diagnosticCode", None), hint)
            eid = msg.event_id(address, at)
            out.append(failure(eid, msg.ids(address), at, verdict, source_kind="soft", address=address))
        return out

    def _not_sent(self, msg: _Message) -> list[Mapped]:
        """Reject (a virus) and RenderingFailure (a template error): SES will never send this message."""
        detail = msg.rec.optional_child("reject" if msg.event_type == "Reject" else "failure")
        text = (detail.text("reason", None) or detail.text("errorMessage", None)) if detail else None
        verdict = self.classify(None, None, text, f"ses:{msg.event_type}")
        at = msg.mail.iso_time("timestamp")
        return [
            failure(msg.event_id(address), msg.ids(address), at, verdict, source_kind="hard", address=address)
            for address in msg.destination
        ]

    def _open(self, msg: _Message) -> list[Mapped]:
        open_ = msg.rec.child("open")
        return [_engagement(msg, open_, "OPEN", None)]

    def _click(self, msg: _Message) -> list[Mapped]:
        click = msg.rec.child("click")
        return [_engagement(msg, click, "CLICK", click.required_text("link", None))]


def _plain(msg: _Message, event_type: str, at: int, address: str) -> Mapped:
    return Mapped(event(msg.event_id(address, at), msg.ids(address), event_type, at, address=address))


def _engagement(msg: _Message, node: Node, event_type: str, url: str | None) -> Mapped:
    if not msg.single:
        raise UnmappableRecord("mail.destination", f"{len(msg.destination)} recipients: the {event_type} names none")
    at = node.iso_time("timestamp")
    address = msg.destination[0]
    eid = msg.event_id(address, at, url, node.text("ipAddress", None), node.text("userAgent", None))
    return Mapped(event(eid, msg.ids(address), event_type, at, url=url, address=address))


def _tag(tags: Node | None, key: str) -> str | None:
    """SES tag values are lists of strings; an id tag must hold exactly one."""
    if tags is None or not tags.has(key):
        return None
    value = tags.value[key]
    where = tags.where(key)
    if isinstance(value, list):
        if len(value) != 1:
            raise UnmappableRecord(where, f"an id tag must hold one value, not {len(value)}")
        value = value[0]
    return platform_id(value, where)


def _address_key(address: str) -> str:
    return address.strip().lower()


def _unwrap_sns(rec: Node) -> Node:
    """SNS delivers the SES record as a JSON string in "Message"; anything else is the record itself."""
    if rec.value.get("Type") != "Notification" or not isinstance(rec.value.get("Message"), str):
        return rec
    message = rec.required_text("Message", None)
    return Node.of(parse_json(message.encode("utf-8"), "Message"), "Message")
