"""The ingest benchmark's input: the workload's contract events as each MTA would publish them.

`render(format, events)` turns MtaEvent dicts (consumer/cli/workload.py) into source records of one format
(`consumer.ingest.formats.FORMATS`), shaped and sized as the vendors document them, and says which events the
format's mapper must give back. What a format cannot say is rendered as what its vendor does say instead:
- KumoMTA (one log record per event) tracks no opens or clicks: those are not rendered, nor counted;
- SES (one event-publishing record per event) and SendGrid (webhook posts of SENDGRID_BATCH events each) never
  say "retries exhausted": they report giving up as a temporary bounce (SES Transient, SendGrid `blocked`),
  which maps to SOFT_BOUNCE.
Failure replies are the texts mailbox providers answer for the event's reason, each ending in a token of its own
(as Gmail's and Microsoft's do), so the classifier's result cache never helps: the realistic worst case.
Records are keyed by delivery_id (a SendGrid post by its first event's): the bare copy that measures the limit
keys its output as the ingest stage keys events, without parsing.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from hashlib import blake2b
from typing import Any

Event = dict[str, Any]
Triple = tuple[str, str, str]  # delivery_id, message_id, event type
SENDGRID_BATCH = 8  # events per webhook post: SendGrid batches what happened in the same few seconds
SENDING_IP = "198.51.100.7"
SENDER = "bounces@news.shop.example"
DOMAINS = ("gmail.com", "outlook.com", "yahoo.com", "gmx.de", "orange.fr", "icloud.com", "hotmail.com", "web.de")


@dataclass(frozen=True)
class Reply:
    """A remote server's answer, and how each vendor categorises it (chosen so every format gives the reason)."""

    code: int
    enhanced: str
    text: str
    kumo: str = "Uncategorized"  # KumoMTA bounce_classification
    ses: str = "General"  # SES bounceSubType (bounces) or delayType (delays)
    sendgrid: str = "Unclassified"  # SendGrid bounce_classification


REPLIES: dict[str, Reply] = {
    "user_unknown": Reply(
        550,
        "5.1.1",
        "The email account that you tried to reach does not exist. Please try double-checking the recipient's "
        "email address for typos or unnecessary spaces. https://support.google.com/mail/?p=NoSuchUser",
        kumo="InvalidRecipient",
        ses="NoEmail",
        sendgrid="Invalid Address",
    ),
    "invalid_domain": Reply(
        550, "5.1.2", "Host or domain name not found. Name service error for type=MX: Host not found", kumo="BadDomain"
    ),
    "account_disabled": Reply(
        550,
        "5.2.1",
        "The email account that you tried to reach is disabled. https://support.google.com/mail/?p=DisabledUser",
    ),
    "mailbox_full": Reply(
        452,
        "4.2.2",
        "The email account that you tried to reach is over quota. Please direct the recipient to "
        "https://support.google.com/mail/?p=OverQuotaTemp",
        kumo="QuotaIssues",
        ses="MailboxFull",
    ),
    "unreachable": Reply(451, "4.3.0", "Temporary system problem. Try again later.", ses="InternalFailure"),
    "refused": Reply(
        421,
        "4.7.0",
        f"[TSS04] Messages from {SENDING_IP} temporarily deferred due to unexpected volume or user complaints - "
        "4.16.55.1; see https://postmaster.yahooinc.com/error-codes",
        kumo="PolicyRelated",
        ses="IPFailure",
        sendgrid="Reputation",
    ),
    "not_connected": Reply(
        421,
        "4.4.2",
        "Connection timed out while talking to the remote host",
        kumo="NoAnswerFromHost",
        ses="TransientCommunicationFailure",
    ),
}
GREYLISTED = Reply(450, "4.2.0", "Recipient address rejected: Greylisted, see https://postgrey.example/help.html")


@dataclass
class Rendered:
    records: list[tuple[bytes, bytes]] = field(default_factory=list)  # (key, value) of each source record
    expected: Counter[Triple] = field(default_factory=Counter)  # what mapping every record must give

    @property
    def events(self) -> int:
        return sum(self.expected.values())


def expected_type(fmt: str, kind: str) -> str | None:
    """The type `fmt`'s mapper gives for a contract event of type `kind`; None: the format cannot carry it."""
    if fmt == "kumomta":
        return None if kind in ("OPEN", "CLICK") else kind
    if fmt not in _RENDERERS:
        raise ValueError(f"unknown format {fmt!r}")
    return "SOFT_BOUNCE" if kind == "RETRIES_EXHAUSTED" else kind


def render(fmt: str, events: Iterable[Event]) -> Rendered:
    """Every event `fmt` can carry, as the vendor's source records, in the events' order."""
    messages = _Messages(events)
    out = Rendered()
    carried = [(e, t) for e in messages.events if (t := expected_type(fmt, e["type"])) is not None]
    for event, kind in carried:
        out.expected[(event["delivery_id"], event["message_id"], kind)] += 1
    make = _RENDERERS[fmt]
    if fmt == "sendgrid":
        for i in range(0, len(carried), SENDGRID_BATCH):
            batch = [e for e, _ in carried[i : i + SENDGRID_BATCH]]
            out.records.append((batch[0]["delivery_id"].encode(), _json([make(e, messages) for e in batch])))
    else:
        out.records = [(e["delivery_id"].encode(), _json(make(e, messages))) for e, _ in carried]
    return out


# --- what every record of a message shares ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    address: str
    sent_ms: int  # its RELAYED time: SES dates the `mail` part of every record by the sending
    digest: str  # 32 hex digits, the seed of the vendors' own ids


class _Messages:
    def __init__(self, events: Iterable[Event]) -> None:
        self.events: Sequence[Event] = list(events)
        self._sent: dict[tuple[str, str], int] = {}  # a message's first event is its RELAYED
        for e in self.events:
            key = (e["delivery_id"], e["message_id"])
            self._sent[key] = min(e["occurred_at"], self._sent.get(key, e["occurred_at"]))
        self._cache: dict[tuple[str, str], Message] = {}

    def of(self, event: Event) -> Message:
        key = (event["delivery_id"], event["message_id"])
        found = self._cache.get(key)
        if found is None:
            digest = _digest(*key)
            domain = DOMAINS[int(digest[:4], 16) % len(DOMAINS)]
            found = Message(f"{key[1]}.{key[0]}@{domain}", self._sent[key], digest)
            self._cache[key] = found
        return found


def _digest(*parts: str) -> str:
    return blake2b("\x00".join(parts).encode(), digest_size=16).hexdigest()


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def _iso(ms: int) -> str:
    return f"{datetime.fromtimestamp(ms // 1000, UTC):%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def _reply(event: Event) -> Reply:
    if event["type"] == "IGNORED":
        return GREYLISTED
    return REPLIES[event["reason"]]


def _reply_text(event: Event, reply: Reply) -> str:
    """The reply with a token of its own, as a provider's server and queue ids make every reply unique."""
    return f"{reply.text} {_digest(event['event_id'])[:20]} - gsmtp"


def _smtp(event: Event, reply: Reply) -> str:
    """The whole reply line, as SES and SendGrid quote it."""
    return f"{reply.code} {reply.enhanced} {_reply_text(event, reply)}"


# --- KumoMTA log records (https://docs.kumomta.com/reference/log_record/) -------------------------------------

_KUMO_TYPES = {
    "RELAYED": "Reception",
    "DELIVERED": "Delivery",
    "SOFT_BOUNCE": "TransientFailure",
    "IGNORED": "TransientFailure",
    "HARD_BOUNCE": "Bounce",
    "RETRIES_EXHAUSTED": "Expiration",
    "COMPLAINT": "Feedback",
}


def _kumomta(event: Event, messages: _Messages) -> dict[str, Any]:
    m = messages.of(event)
    kind = _KUMO_TYPES[event["type"]]
    domain = m.address.rsplit("@", 1)[1]
    remote = kind not in ("Reception", "Feedback")
    record = {
        "type": kind,
        "id": m.digest,  # the spool id: one message per recipient
        "sender": SENDER,
        "recipient": m.address,
        "queue": f"{event['delivery_id']}:shop@{domain}",
        "site": f"source1->mx.{domain}." if remote else "",
        "size": 48_213,
        "response": _kumo_response(event),
        "peer_address": {"name": f"mx.{domain}.", "addr": "192.0.2.25"} if remote else None,
        "timestamp": event["occurred_at"] // 1000,
        "created": m.sent_ms // 1000,
        "num_attempts": event["attempt"],
        "bounce_classification": _reply(event).kumo if kind in ("TransientFailure", "Bounce") else "Uncategorized",
        "egress_pool": "pool0",
        "egress_source": "source1",
        "feedback_report": None,
        "meta": {"delivery_id": event["delivery_id"], "message_id": event["message_id"], "tenant": "shop"},
        "headers": {},
        "delivery_protocol": "ESMTP",
        "reception_protocol": "HTTP",
        "nodeid": "557f3ad4-2c8c-11ee-976e-782d7e12e173",
    }
    if kind == "Feedback":  # an ARF report: the ids come from its decoded X-KumoRef trace, not from meta
        trace = {"recipient": m.address, "delivery_id": event["delivery_id"], "message_id": event["message_id"]}
        record["feedback_report"] = {"feedback_type": "abuse", "supplemental_trace": trace}
        record |= {"id": _digest("fbl", event["event_id"]), "recipient": "fbl@news.shop.example", "meta": {}}
    return record


def _kumo_response(event: Event) -> dict[str, Any]:
    if event["type"] in ("RELAYED", "COMPLAINT"):
        return {"code": 250, "enhanced_code": None, "content": "", "command": None}
    if event["type"] == "DELIVERED":
        return {"code": 250, "enhanced_code": {"class": 2, "subject": 0, "detail": 0}, "content": "OK", "command": "."}
    reply = _reply(event)
    parts = [int(p) for p in reply.enhanced.split(".")]
    return {
        "code": reply.code,
        "enhanced_code": dict(zip(("class", "subject", "detail"), parts, strict=True)),
        "content": _reply_text(event, reply),
        "command": "RCPT TO" if event["type"] == "HARD_BOUNCE" else ".",
    }


# --- Amazon SES event publishing (https://docs.aws.amazon.com/ses/latest/dg/event-publishing-retrieving-firehose-contents.html)


def _ses(event: Event, messages: _Messages) -> dict[str, Any]:
    m = messages.of(event)
    event_type, key, detail = _SES_DETAILS[event["type"]]
    return {"eventType": event_type, "mail": _ses_mail(event, m), key: detail(event, m)}


def _ses_mail(event: Event, m: Message) -> dict[str, Any]:
    d = m.digest
    return {
        "timestamp": _iso(m.sent_ms),
        "source": "Shop <news@shop.example>",
        "sourceArn": "arn:aws:ses:eu-west-1:123456789012:identity/shop.example",
        "sendingAccountId": "123456789012",
        "messageId": f"{d[:16]}-{d[16:24]}-{d[24:28]}-{d[28:32]}-{d[:4]}-{d[4:16]}-000000",
        "destination": [m.address],
        "headersTruncated": False,
        "commonHeaders": {"from": ["Shop <news@shop.example>"], "to": [m.address], "subject": "News from the shop"},
        "tags": {
            "ses:configuration-set": ["shop-campaigns"],
            "ses:source-ip": [SENDING_IP],
            "ses:from-domain": ["shop.example"],
            "delivery_id": [event["delivery_id"]],
            "message_id": [event["message_id"]],
        },
    }


def _ses_delivery(event: Event, m: Message) -> dict[str, Any]:
    return {
        "timestamp": _iso(event["occurred_at"]),
        "processingTimeMillis": event["occurred_at"] - m.sent_ms,
        "recipients": [m.address],
        "smtpResponse": "250 2.0.0 OK",
        "reportingMTA": "a8-52.smtp-out.amazonses.com",
    }


def _ses_recipient(event: Event, m: Message, reply: Reply) -> dict[str, Any]:
    return {"emailAddress": m.address, "status": reply.enhanced, "diagnosticCode": f"smtp; {_smtp(event, reply)}"}


def _ses_delay(event: Event, m: Message) -> dict[str, Any]:
    reply = _reply(event)
    return {
        "timestamp": _iso(event["occurred_at"]),
        "delayType": reply.ses,
        "expirationTime": _iso(m.sent_ms + 14 * 3_600_000),
        "reportingMTA": "a8-52.smtp-out.amazonses.com",
        "delayedRecipients": [_ses_recipient(event, m, reply)],
    }


def _ses_bounce(event: Event, m: Message) -> dict[str, Any]:
    """Permanent for a hard bounce; Transient when SES gives up retrying (RETRIES_EXHAUSTED)."""
    reply = _reply(event)
    return {
        "bounceType": "Permanent" if event["type"] == "HARD_BOUNCE" else "Transient",
        "bounceSubType": reply.ses,
        "bouncedRecipients": [{**_ses_recipient(event, m, reply), "action": "failed"}],
        "timestamp": _iso(event["occurred_at"]),
        "feedbackId": _digest("feedback", event["event_id"]),
        "reportingMTA": "dns; a8-52.smtp-out.amazonses.com",
    }


def _ses_complaint(event: Event, m: Message) -> dict[str, Any]:
    return {
        "feedbackId": _digest("feedback", event["event_id"]),
        "complainedRecipients": [{"emailAddress": m.address}],
        "timestamp": _iso(event["occurred_at"]),
        "userAgent": "Yahoo!-Mail-Feedback/2.0",
        "complaintFeedbackType": "abuse",
    }


def _ses_open(event: Event, m: Message) -> dict[str, Any]:
    return {"ipAddress": _reader_ip(event), "timestamp": _iso(event["occurred_at"]), "userAgent": USER_AGENT}


def _ses_click(event: Event, m: Message) -> dict[str, Any]:
    return {**_ses_open(event, m), "link": event["url"], "linkTags": {"campaign": [event["delivery_id"]]}}


def _reader_ip(event: Event) -> str:
    return f"203.0.113.{int(_digest(event['event_id'])[:2], 16) % 250 + 1}"


USER_AGENT = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko)"
_SES_DETAILS: dict[str, tuple[str, str, Callable[[Event, Message], dict[str, Any]]]] = {
    "RELAYED": ("Send", "send", lambda event, m: {}),
    "DELIVERED": ("Delivery", "delivery", _ses_delivery),
    "SOFT_BOUNCE": ("DeliveryDelay", "deliveryDelay", _ses_delay),
    "IGNORED": ("DeliveryDelay", "deliveryDelay", _ses_delay),
    "HARD_BOUNCE": ("Bounce", "bounce", _ses_bounce),
    "RETRIES_EXHAUSTED": ("Bounce", "bounce", _ses_bounce),
    "OPEN": ("Open", "open", _ses_open),
    "CLICK": ("Click", "click", _ses_click),
    "COMPLAINT": ("Complaint", "complaint", _ses_complaint),
}


# --- SendGrid event webhook (https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event) --------

_SENDGRID_EVENTS = {
    "RELAYED": "processed",
    "DELIVERED": "delivered",
    "SOFT_BOUNCE": "deferred",
    "IGNORED": "deferred",
    "HARD_BOUNCE": "bounce",
    "RETRIES_EXHAUSTED": "bounce",  # type "blocked": SendGrid stopped trying
    "OPEN": "open",
    "CLICK": "click",
    "COMPLAINT": "spamreport",
}


def _sendgrid(event: Event, messages: _Messages) -> dict[str, Any]:
    m = messages.of(event)
    return {
        "email": m.address,
        "timestamp": event["occurred_at"] // 1000,
        "smtp-id": f"<{m.digest[:12]}@ismtpd-0042>",
        "event": _SENDGRID_EVENTS[event["type"]],
        "category": [event["delivery_id"]],
        "sg_event_id": _digest("sg", event["event_id"])[:22],
        "sg_message_id": f"{m.digest[:12]}.filterdrecv-0042.{m.digest[12:20].upper()}.0",
        "delivery_id": event["delivery_id"],  # custom args: SendGrid adds them to every event
        "message_id": event["message_id"],
        **_sendgrid_details(event),
    }


def _sendgrid_details(event: Event) -> dict[str, Any]:
    kind = event["type"]
    if kind == "DELIVERED":
        return {"ip": SENDING_IP, "tls": 1, "response": "250 2.0.0 OK"}
    if kind in ("SOFT_BOUNCE", "IGNORED"):
        return {"ip": SENDING_IP, "tls": 1, "response": _smtp(event, _reply(event)), "attempt": str(event["attempt"])}
    if kind in ("HARD_BOUNCE", "RETRIES_EXHAUSTED"):
        reply = _reply(event)
        bounce = {"type": "bounce" if kind == "HARD_BOUNCE" else "blocked", "status": reply.enhanced}
        bounce |= {"reason": _smtp(event, reply), "bounce_classification": reply.sendgrid}
        return {"ip": SENDING_IP, "tls": 1, **bounce}
    if kind == "OPEN":
        return {"ip": _reader_ip(event), "useragent": USER_AGENT, "sg_machine_open": False}
    if kind == "CLICK":
        offset = {"index": 0, "type": "html"}
        return {"ip": _reader_ip(event), "useragent": USER_AGENT, "url": event["url"], "url_offset": offset}
    return {}


_RENDERERS: dict[str, Callable[[Event, _Messages], Any]] = {"kumomta": _kumomta, "ses": _ses, "sendgrid": _sendgrid}
