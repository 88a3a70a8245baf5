"""A small, realistic email send, described once as data and rendered for every input path.

`SEND` is two deliveries of a shop: a newsletter with EFS on, and a promotion that needs a confirmation and takes
the service's EFS default. Its 30 messages cover what mailbox providers answer: delivered, hard bounces (unknown
users, a disabled account), soft bounces retried with success, soft bounces never resolved, a greylisting deferral,
opens (one message opened twice), clicks, complaints, and messages still in flight.

Renderings (lists in event-time order; `send` defaults to `SEND`):
- `delivery_events(send)`: the DeliveryEvent records of the deliveries topic (PREPARED, CONFIRMED);
- `native_events(send)`: the MtaEvent records the platform's own MTA would publish to `mta.events`;
- `source_records(format_name, send)`: one Kafka record value per vendor record, for each name of
  `consumer.ingest.formats.FORMATS` (KumoMTA log records, SES event publishing records, SendGrid webhook posts);
- `tracking_events(format_name, send)`: the native events a vendor does not report, which the platform's own
  tracking publishes to `mta.events` beside it (KumoMTA tracks no opens or clicks).

Mapping `source_records(name)` and adding `tracking_events(name)` and `delivery_events()` leads to the same KPIs as
`native_events()` and `delivery_events()`. The send keeps to what every format can express:
- one recipient per message (SES bulk sending): SES names no recipient in the opens and clicks of a message sent
  to several;
- no RETRIES_EXHAUSTED: only KumoMTA says it (Expiration); SES and SendGrid report giving up as soft bounces;
- attempts: KumoMTA logs them on every record, SendGrid on deferrals only, SES never (they map to 0). The core
  orders bounces by time before attempt, so the KPIs do not depend on them.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from hashlib import blake2b
from typing import Any

from consumer.ingest.formats import FORMATS

Record = dict[str, Any]

HOUR, DAY = 3_600, 86_400
T_NEWS = 1_772_442_000  # 2026-03-02T09:00:00Z: the newsletter's first message leaves
T_PROMO = T_NEWS + 2 * HOUR  # the promotion's
SENDING_IP = "198.51.100.7"
SENDER = "bounces@news.shop.example"
TRACKED = frozenset({"OPEN", "CLICK"})  # engagement: the tracking pixel and the link redirector report it
# What each vendor does not report at all; the platform's own tracking sends it as native events.
UNREPORTED: dict[str, frozenset[str]] = {"kumomta": TRACKED, "ses": frozenset(), "sendgrid": frozenset()}


# --- the send, as data ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """What a remote server answered to a failed attempt, and how each vendor categorises it."""

    code: int
    enhanced: str  # RFC 3463, "5.1.1"
    text: str  # the reply after its codes, as KumoMTA logs it
    reason: str  # the failure reason every format's classification gives (the native events carry it)
    kumo: str = "Uncategorized"  # KumoMTA bounce_classification
    ses: str = "General"  # SES bounceSubType (bounces) or delayType (delays)
    sendgrid: str = "Unclassified"  # SendGrid bounce_classification (bounces)

    @property
    def smtp(self) -> str:
        """The whole reply line, as SES and SendGrid quote it."""
        return f"{self.code} {self.enhanced} {self.text}"


@dataclass(frozen=True)
class Step:
    """One thing that happened to a message: an MtaEvent type at a time (epoch seconds)."""

    type: str
    at: int
    attempt: int = 0  # the contract's: 0 for the first (as KumoMTA's num_attempts; SendGrid says 1 for it)
    reply: Reply | None = None  # failures
    url: str | None = None  # clicks


@dataclass(frozen=True)
class Message:
    delivery_id: str
    message_id: str
    address: str
    steps: tuple[Step, ...]  # the first is RELAYED: SES dates every record of a message by its sending

    @property
    def sent_at(self) -> int:
        return self.steps[0].at


@dataclass(frozen=True)
class Delivery:
    delivery_id: str
    prepared_at: int  # epoch seconds, as every time of the send
    to_deliver: int
    validity_end: int
    efs: bool | None  # None: the service's default decides
    confirmed_by: str | None = None  # set when the delivery needs a confirmation
    confirmed_at: int | None = None


@dataclass(frozen=True)
class Send:
    deliveries: tuple[Delivery, ...]
    messages: tuple[Message, ...] = field(repr=False)


# Replies as the providers word them; each is classified alike whatever vendor quotes it.
GMAIL_NO_SUCH_USER = Reply(
    550,
    "5.1.1",
    "The email account that you tried to reach does not exist. Please try double-checking the recipient's email "
    "address for typos or unnecessary spaces. For more information, go to https://support.google.com/mail/"
    "?p=NoSuchUser 41be03b00d2f7-7e9a1b2c3d4si1234567a12.300 - gsmtp",
    "user_unknown",
    kumo="InvalidRecipient",
    sendgrid="Invalid Address",
)
M365_NOT_FOUND = Reply(
    550,
    "5.1.10",
    "RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
    "user_unknown",
    kumo="InvalidRecipient",
    sendgrid="Invalid Address",
)
GMAIL_DISABLED = Reply(
    550,
    "5.2.1",
    "The email account that you tried to reach is disabled. Learn more at https://support.google.com/mail/"
    "?p=DisabledUser 5b1f17b1804b1-43c1e7a2b3csi1234567f9a.120 - gsmtp",
    "account_disabled",
    kumo="InactiveMailbox",  # the provider's text is more precise than the category: it wins
    sendgrid="Mailbox Unavailable",
)
GMAIL_OVER_QUOTA = Reply(
    452,
    "4.2.2",
    "The email account that you tried to reach is over quota. Please direct the recipient to "
    "https://support.google.com/mail/?p=OverQuotaTemp 6a1803df08f44-6d8e3b2a1c0si1234567d6.88 - gsmtp",
    "mailbox_full",
    kumo="QuotaIssues",
    ses="MailboxFull",
)
YAHOO_DEFERRED = Reply(
    421,
    "4.7.0",
    f"[TSS04] Messages from {SENDING_IP} temporarily deferred due to unexpected volume or user complaints - "
    "4.16.55.1; see https://postmaster.yahooinc.com/error-codes",
    "refused",
    kumo="PolicyRelated",
    ses="IPFailure",
)
OUTLOOK_RATE_LIMITED = Reply(
    451,
    "4.7.650",
    f"The mail server [{SENDING_IP}] has been temporarily rate limited due to IP reputation. For e-mail delivery "
    "information, see https://aka.ms/postmaster (S775)",
    "refused",
    kumo="PolicyRelated",
    ses="IPFailure",
)
GREYLISTED = Reply(
    450,
    "4.2.0",
    "Recipient address rejected: Greylisted, see https://postgrey.schweikert.ch/help/kabelmail.example.html",
    "error_ignored",  # nothing failed: the next attempt goes through
    ses="RecipientServerError",
)
SYSTEM_PROBLEM = Reply(451, "4.3.0", "Temporary system problem. Try again later.", "unreachable", ses="InternalFailure")
MAILBOX_FULL = Reply(452, "4.2.2", "Mailbox full", "mailbox_full", kumo="QuotaIssues", ses="MailboxFull")

# Steps, at seconds after the delivery's start (`_message` dates them).


def relayed(at: int) -> Step:
    return Step("RELAYED", at)


def delivered(at: int, attempt: int = 0) -> Step:
    return Step("DELIVERED", at, attempt)


def deferred(at: int, reply: Reply, attempt: int) -> Step:
    """The MTA retries: a soft bounce, or IGNORED when the reply means nothing failed (greylisting)."""
    return Step("IGNORED" if reply.reason == "error_ignored" else "SOFT_BOUNCE", at, attempt, reply)


def bounced(at: int, reply: Reply) -> Step:
    return Step("HARD_BOUNCE", at, 0, reply)


def opened(at: int) -> Step:
    return Step("OPEN", at)


def clicked(at: int, url: str) -> Step:
    return Step("CLICK", at, url=url)


def complained(at: int) -> Step:
    return Step("COMPLAINT", at)


def _message(delivery: str, start: int, message_id: str, address: str, *steps: Step) -> Message:
    dated = tuple(replace(s, at=start + s.at) for s in steps)
    if dated[0].type != "RELAYED":
        raise ValueError(f"{message_id}: a message's story starts with RELAYED")
    return Message(delivery, message_id, address, dated)


NEWS_ID, PROMO_ID = "newsletter-2026-03", "promo-2026-03"
NEWS_URL = "https://shop.example/march?utm_source=email&utm_campaign=newsletter-2026-03"
SHOES_URL = "https://shop.example/sale/shoes?utm_source=email&utm_campaign=promo-2026-03"
SALE_URL = "https://shop.example/sale?utm_source=email&utm_campaign=promo-2026-03"


def _news(number: int, address: str, *steps: Step) -> Message:
    return _message(NEWS_ID, T_NEWS, f"nl-{number:04d}", address, *steps)


def _promo(number: int, address: str, *steps: Step) -> Message:
    return _message(PROMO_ID, T_PROMO, f"pr-{number:04d}", address, *steps)


_NEWS_DELIVERED = [
    "jonas.keller@gmx.de",
    "karin.holm@outlook.com",
    "luis.ortega@yahoo.com",
    "mei.chen@gmail.com",
    "nadia.rahman@icloud.com",
    "olivier.dupont@orange.fr",
    "priya.nair@gmail.com",
    "quentin.moreau@laposte.net",
    "rosa.alves@hotmail.com",
]
_PROMO_DELIVERED = [
    "sara.berg@gmail.com",
    "tomas.novak@seznam.cz",
    "ulla.koski@outlook.com",
    "victor.lemaire@yahoo.fr",
    "wanda.zielinska@wp.pl",
]

SEND = Send(
    deliveries=(
        Delivery(NEWS_ID, T_NEWS - 900, to_deliver=20, validity_end=T_NEWS + 3 * DAY, efs=True),
        Delivery(
            PROMO_ID,
            T_PROMO - 1_800,
            to_deliver=12,
            validity_end=T_PROMO + 2 * DAY,
            efs=None,
            confirmed_by="marta.silva",
            confirmed_at=T_PROMO - 600,
        ),
    ),
    messages=(
        # The newsletter: 18 of its 20 messages relayed so far.
        _news(1, "ana.lima@gmail.com", relayed(1), delivered(3), opened(1_800), clicked(1_830, NEWS_URL),
              opened(20_000)),  # opened again that afternoon
        _news(2, "bruno.costa@yahoo.com", relayed(2), deferred(4, YAHOO_DEFERRED, 0), delivered(904, 1), opened(5_400)),
        _news(3, "no.such.user@gmail.com", relayed(3), bounced(5, GMAIL_NO_SUCH_USER)),
        _news(4, "dario.ferri@gmail.com", relayed(4), deferred(6, GMAIL_OVER_QUOTA, 0)),
        _news(5, "eva.schmidt@kabelmail.example", relayed(5), deferred(7, GREYLISTED, 0), delivered(367, 1)),
        _news(6, "frank.moreau@corp.example", relayed(6), bounced(9, M365_NOT_FOUND)),
        _news(7, "gina.rossi@icloud.com", relayed(7), delivered(9), clicked(7_200, NEWS_URL)),  # images blocked
        _news(8, "hugo.braun@yahoo.com", relayed(8), delivered(10), opened(3_600), complained(3_700)),
        _news(9, "ines.duarte@gmail.com", relayed(9)),  # still in flight
        *(
            _news(10 + i, address, relayed(10 + i), delivered(12 + i), *([opened(2 * HOUR + i)] if i < 2 else []))
            for i, address in enumerate(_NEWS_DELIVERED)
        ),
        # The promotion: all 12 messages relayed.
        _promo(1, "jana.novak@gmail.com", relayed(1), delivered(3), opened(2_400)),
        _promo(2, "karl.weber@outlook.com", relayed(2), deferred(4, OUTLOOK_RATE_LIMITED, 0), delivered(1_204, 1)),
        # Two deferrals, never resolved: the last one's reason is the failure's.
        _promo(3, "lea.martin@webmail.example", relayed(3), deferred(5, SYSTEM_PROBLEM, 0),
               deferred(1_805, MAILBOX_FULL, 1)),
        _promo(4, "marco.bianchi@gmail.com", relayed(4), bounced(6, GMAIL_DISABLED)),
        _promo(5, "nina.kowalski@yahoo.com", relayed(5), delivered(7), clicked(3_000, SHOES_URL),
               clicked(3_060, SALE_URL)),  # two links, no open reported
        _promo(6, "oscar.lind@outlook.com", relayed(6), delivered(8), complained(40_000)),
        _promo(7, "paula.reyes@gmail.com", relayed(7)),  # still in flight
        *(
            _promo(8 + i, address, relayed(8 + i), delivered(10 + i), *([opened(4_000)] if i == 0 else []))
            for i, address in enumerate(_PROMO_DELIVERED)
        ),
    ),
)  # fmt: skip


# --- renderings -----------------------------------------------------------------------------------------------


def delivery_events(send: Send = SEND) -> list[Record]:
    """The deliveries topic: each delivery's PREPARED, and its CONFIRMED by an actor who may start deliveries."""
    out = []
    for d in send.deliveries:
        out.append(_delivery_event(d, "PREPARED", d.prepared_at))
        if d.confirmed_by is not None:
            out.append(_delivery_event(d, "CONFIRMED", d.confirmed_at or d.prepared_at))
    return sorted(out, key=lambda e: e["occurred_at"])


def native_events(send: Send = SEND) -> list[Record]:
    """What the platform's own MTA (and tracking) would publish to mta.events: one MtaEvent per step."""
    return _in_time_order(_native(m, i) for m in send.messages for i in range(len(m.steps)))


def tracking_events(format_name: str, send: Send = SEND) -> list[Record]:
    """The native events of what `format_name`'s vendor does not report (KumoMTA: opens and clicks)."""
    unreported = UNREPORTED[_known(format_name)]
    return [e for e in native_events(send) if e["type"] in unreported]


def source_records(format_name: str, send: Send = SEND) -> list[bytes]:
    """One Kafka record value per vendor record (SendGrid: one webhook post of several events each)."""
    return _RENDERERS[_known(format_name)](send)


def _known(format_name: str) -> str:
    if format_name not in FORMATS:
        raise ValueError(f"unknown format {format_name!r}; expected one of {', '.join(FORMATS)}")
    return format_name


def _delivery_event(d: Delivery, kind: str, at: int) -> Record:
    prepared = kind == "PREPARED"
    return {
        "event_id": f"{d.delivery_id}-{kind.lower()}",
        "delivery_id": d.delivery_id,
        "type": kind,
        "occurred_at": at * 1000,
        "to_deliver": d.to_deliver if prepared else None,
        "efs": d.efs if prepared else None,
        "validity_end": d.validity_end * 1000 if prepared else None,
        "confirmation_required": d.confirmed_by is not None if prepared else None,
        "scheduled_at": None,
        "actor": None if prepared else d.confirmed_by,
        "actor_roles": None if prepared else ["start_deliveries", "edit_campaigns"],
    }


def _native(m: Message, index: int) -> Record:
    step = m.steps[index]
    return {
        "event_id": f"mta-{m.message_id}-{index}",
        "delivery_id": m.delivery_id,
        "message_id": m.message_id,
        "type": step.type,
        "occurred_at": step.at * 1000,
        "attempt": step.attempt,
        "reason": step.reply.reason if step.reply else None,
        "url": step.url,
        "address": m.address,
    }


def _in_time_order(events: Iterable[Record]) -> list[Record]:
    return sorted(events, key=lambda e: e["occurred_at"])  # stable: a message's steps keep their order


def _vendor_steps(format_name: str, send: Send) -> list[tuple[Message, Step]]:
    """What the vendor reports, in time order across messages, as its stream would carry it."""
    unreported = UNREPORTED[format_name]
    steps = [(m, s) for m in send.messages for s in m.steps if s.type not in unreported]
    return sorted(steps, key=lambda pair: pair[1].at)


def _digest(*parts: str) -> bytes:
    return blake2b("\x00".join(parts).encode(), digest_size=16).digest()


def _iso(at: int, millis: str = ".000") -> str:
    return datetime.fromtimestamp(at, UTC).strftime(f"%Y-%m-%dT%H:%M:%S{millis}Z")


def _domain(address: str) -> str:
    return address.rsplit("@", 1)[1]


def _reader_ip(m: Message, step: Step) -> str:
    return f"203.0.113.{_digest(m.message_id, str(step.at))[0] % 250 + 1}"


def _user_agent(m: Message, step: Step) -> str:
    if step.type == "OPEN" and _domain(m.address) == "gmail.com":  # Gmail fetches images through its proxy
        return "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
    return (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"
    )


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


# --- KumoMTA log records (https://docs.kumomta.com/reference/log_record/) --------------------------------------

_KUMO_TYPES = {
    "RELAYED": "Reception",
    "DELIVERED": "Delivery",
    "SOFT_BOUNCE": "TransientFailure",
    "IGNORED": "TransientFailure",
    "HARD_BOUNCE": "Bounce",
    "COMPLAINT": "Feedback",
}
_KUMO_NODE = "557f3ad4-2c8c-11ee-976e-782d7e12e173"


def _kumomta(send: Send) -> list[bytes]:
    return [_json(_kumo_record(m, s)) for m, s in _vendor_steps("kumomta", send)]


def _kumo_record(m: Message, step: Step) -> Record:
    kind = _KUMO_TYPES[step.type]
    if kind == "Feedback":
        return _kumo_feedback(m, step)
    remote = kind != "Reception"
    return {
        "type": kind,
        "id": _digest("kumo", m.message_id).hex(),  # the spool id: one message per recipient
        "sender": SENDER,
        "recipient": m.address,
        "queue": f"{m.delivery_id}:shop@{_domain(m.address)}",
        "site": f"source1->mx.{_domain(m.address)}." if remote else "",
        "size": 48_213,
        "response": _kumo_response(step),
        "peer_address": {"name": f"mx.{_domain(m.address)}.", "addr": "192.0.2.25"} if remote else None,
        "timestamp": step.at,
        "created": m.sent_at,
        "num_attempts": step.attempt,
        "bounce_classification": step.reply.kumo if step.reply else "Uncategorized",
        "egress_pool": "pool0",
        "egress_source": "source1",
        "feedback_report": None,
        "meta": {"delivery_id": m.delivery_id, "message_id": m.message_id, "tenant": "shop"},
        "headers": {},
        "delivery_protocol": "ESMTP",
        "reception_protocol": "HTTP",
        "nodeid": _KUMO_NODE,
    }


def _kumo_response(step: Step) -> Record:
    reply = step.reply
    if reply is None:
        if step.type == "RELAYED":
            return {"code": 250, "enhanced_code": None, "content": "", "command": None}
        return {"code": 250, "enhanced_code": {"class": 2, "subject": 0, "detail": 0}, "content": "OK", "command": "."}
    parts = [int(p) for p in reply.enhanced.split(".")]
    return {
        "code": reply.code,
        "enhanced_code": dict(zip(("class", "subject", "detail"), parts, strict=True)),
        "content": reply.text,
        "command": "RCPT TO" if step.type == "HARD_BOUNCE" else ".",
    }


def _kumo_feedback(m: Message, step: Step) -> Record:
    """An ARF report from the provider's feedback loop: a new inbound message, whose meta is not the original's;
    the platform's ids come from the decoded X-KumoRef trace (include_meta_names)."""
    trace = {"recipient": m.address, "delivery_id": m.delivery_id, "message_id": m.message_id}
    report = {
        "feedback_type": "abuse",
        "user_agent": "Yahoo!-Mail-Feedback/2.0",
        "version": 1,
        "arrival_date": _iso(step.at - 60, millis=""),
        "incidents": None,
        "original_envelope_id": None,
        "original_mail_from": f"<{SENDER}>",
        "reporting_mta": {"mta_type": "dns", "name": f"feedback.{_domain(m.address)}"},
        "source_ip": SENDING_IP,
        "authentication_results": [],
        "original_rcpto_to": [f"<{m.address}>"],
        "reported_domain": ["shop.example"],
        "reported_uri": [],
        "extensions": {},
        "original_message": None,
        "supplemental_trace": trace,
    }
    return {
        "type": "Feedback",
        "id": _digest("kumo-fbl", m.message_id).hex(),
        "sender": f"feedback@{_domain(m.address)}",
        "recipient": "fbl@news.shop.example",
        "queue": "fbl@news.shop.example",
        "site": "",
        "size": 6_120,
        "response": {"code": 250, "enhanced_code": None, "content": "", "command": "."},
        "peer_address": {"name": f"feedback.{_domain(m.address)}", "addr": "192.0.2.80"},
        "timestamp": step.at,
        "created": step.at,
        "num_attempts": 0,
        "bounce_classification": "Uncategorized",
        "egress_pool": "",
        "egress_source": "",
        "feedback_report": report,
        "meta": {},
        "headers": {},
        "delivery_protocol": "",
        "reception_protocol": "ESMTP",
        "nodeid": _KUMO_NODE,
    }


# --- Amazon SES event publishing (https://docs.aws.amazon.com/ses/latest/dg/event-publishing-retrieving-firehose-contents.html)

_SES_TYPES = {
    "RELAYED": ("Send", "send"),
    "DELIVERED": ("Delivery", "delivery"),
    "SOFT_BOUNCE": ("DeliveryDelay", "deliveryDelay"),
    "IGNORED": ("DeliveryDelay", "deliveryDelay"),
    "HARD_BOUNCE": ("Bounce", "bounce"),
    "OPEN": ("Open", "open"),
    "CLICK": ("Click", "click"),
    "COMPLAINT": ("Complaint", "complaint"),
}
_SES_MTA = "a8-52.smtp-out.amazonses.com"


def _ses(send: Send) -> list[bytes]:
    return [_json(_ses_record(m, s)) for m, s in _vendor_steps("ses", send)]


def _ses_record(m: Message, step: Step) -> Record:
    event_type, key = _SES_TYPES[step.type]
    return {"eventType": event_type, "mail": _ses_mail(m), key: _SES_DETAILS[step.type](m, step)}


def _ses_id(*parts: str) -> str:
    """SES's id shape: 16 hex digits, a UUID, "-000000"."""
    h = _digest("ses", *parts).hex() + _digest("ses-uuid", *parts).hex()
    return f"{h[:16]}-{h[16:24]}-{h[24:28]}-{h[28:32]}-{h[32:36]}-{h[36:48]}-000000"


def _ses_mail(m: Message) -> Record:
    return {
        "timestamp": _iso(m.sent_at),
        "source": "Shop <news@shop.example>",
        "sourceArn": "arn:aws:ses:eu-west-1:123456789012:identity/shop.example",
        "sendingAccountId": "123456789012",
        "messageId": _ses_id(m.message_id),
        "destination": [m.address],
        "headersTruncated": False,
        "commonHeaders": {"from": ["Shop <news@shop.example>"], "to": [m.address], "subject": "News from the shop"},
        "tags": {
            "ses:configuration-set": ["shop-campaigns"],
            "ses:source-ip": [SENDING_IP],
            "ses:from-domain": ["shop.example"],
            "ses:caller-identity": ["campaign-platform"],
            "delivery_id": [m.delivery_id],
            "message_id": [m.message_id],
        },
    }


def _ses_delivery(m: Message, step: Step) -> Record:
    return {
        "timestamp": _iso(step.at),
        "processingTimeMillis": (step.at - m.sent_at) * 1000,
        "recipients": [m.address],
        "smtpResponse": "250 2.0.0 OK",
        "reportingMTA": _SES_MTA,
        "remoteMtaIp": "192.0.2.25",
    }


def _ses_recipient(m: Message, reply: Reply) -> Record:
    return {"emailAddress": m.address, "status": reply.enhanced, "diagnosticCode": f"smtp; {reply.smtp}"}


def _ses_delay(m: Message, step: Step) -> Record:
    """SES is still retrying (for up to 14 hours)."""
    assert step.reply is not None
    return {
        "timestamp": _iso(step.at),
        "delayType": step.reply.ses,
        "expirationTime": _iso(m.sent_at + 14 * HOUR),
        "reportingMTA": _SES_MTA,
        "delayedRecipients": [_ses_recipient(m, step.reply)],
    }


def _ses_bounce(m: Message, step: Step) -> Record:
    assert step.reply is not None
    return {
        "bounceType": "Permanent",
        "bounceSubType": step.reply.ses,
        "bouncedRecipients": [{**_ses_recipient(m, step.reply), "action": "failed"}],
        "timestamp": _iso(step.at),
        "feedbackId": _ses_id(m.message_id, str(step.at)),
        "reportingMTA": f"dns; {_SES_MTA}",
        "remoteMtaIp": "192.0.2.25",
    }


def _ses_complaint(m: Message, step: Step) -> Record:
    return {
        "feedbackId": _ses_id(m.message_id, str(step.at)),
        "complaintSubType": None,
        "complainedRecipients": [{"emailAddress": m.address}],
        "timestamp": _iso(step.at),
        "userAgent": "Yahoo!-Mail-Feedback/2.0",
        "complaintFeedbackType": "abuse",
        "arrivalDate": _iso(step.at - 60),
    }


def _ses_open(m: Message, step: Step) -> Record:
    return {"ipAddress": _reader_ip(m, step), "timestamp": _iso(step.at), "userAgent": _user_agent(m, step)}


def _ses_click(m: Message, step: Step) -> Record:
    return {**_ses_open(m, step), "link": step.url, "linkTags": {"campaign": [m.delivery_id]}}


_SES_DETAILS: dict[str, Callable[[Message, Step], Record]] = {
    "RELAYED": lambda m, step: {},
    "DELIVERED": _ses_delivery,
    "SOFT_BOUNCE": _ses_delay,
    "IGNORED": _ses_delay,
    "HARD_BOUNCE": _ses_bounce,
    "OPEN": _ses_open,
    "CLICK": _ses_click,
    "COMPLAINT": _ses_complaint,
}


# --- SendGrid event webhook (https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event) --------

_SENDGRID_EVENTS = {
    "RELAYED": "processed",
    "DELIVERED": "delivered",
    "SOFT_BOUNCE": "deferred",
    "IGNORED": "deferred",
    "HARD_BOUNCE": "bounce",
    "OPEN": "open",
    "CLICK": "click",
    "COMPLAINT": "spamreport",
}
SENDGRID_BATCH = 8  # events per webhook post: SendGrid batches what happened in the same few seconds


def _sendgrid(send: Send) -> list[bytes]:
    events = [_sendgrid_event(m, s) for m, s in _vendor_steps("sendgrid", send)]
    return [_json(events[i : i + SENDGRID_BATCH]) for i in range(0, len(events), SENDGRID_BATCH)]


def _sendgrid_event(m: Message, step: Step) -> Record:
    message_hash = _digest("sendgrid", m.message_id).hex()
    event = {
        "email": m.address,
        "timestamp": step.at,
        "smtp-id": f"<{message_hash[:12]}@ismtpd-0042>",
        "event": _SENDGRID_EVENTS[step.type],
        "category": [m.delivery_id],
        "sg_event_id": base64.urlsafe_b64encode(_digest("sg-event", m.message_id, str(step.at))).decode()[:22],
        "sg_message_id": f"{message_hash[:12]}.filterdrecv-0042.{message_hash[12:20].upper()}.0",
        "delivery_id": m.delivery_id,  # custom args: SendGrid adds them to every event
        "message_id": m.message_id,
    }
    return {**event, **_sendgrid_details(m, step)}


def _sendgrid_details(m: Message, step: Step) -> Record:
    reply, kind = step.reply, step.type
    if kind == "DELIVERED":
        return {"ip": SENDING_IP, "tls": 1, "response": "250 2.0.0 OK"}
    if reply is not None and kind in ("SOFT_BOUNCE", "IGNORED"):
        return {"ip": SENDING_IP, "tls": 1, "response": reply.smtp, "attempt": str(step.attempt + 1)}
    if reply is not None:  # a bounce SendGrid suppresses the address for
        bounce = {"type": "bounce", "status": reply.enhanced, "reason": reply.smtp}
        return {"ip": SENDING_IP, "tls": 1, **bounce, "bounce_classification": reply.sendgrid}
    if kind == "OPEN":
        return {"ip": _reader_ip(m, step), "useragent": _user_agent(m, step), "sg_machine_open": False}
    if kind == "CLICK":
        offset = {"index": 0, "type": "html"}
        return {"ip": _reader_ip(m, step), "useragent": _user_agent(m, step), "url": step.url, "url_offset": offset}
    return {}


_RENDERERS: dict[str, Callable[[Send], list[bytes]]] = {"kumomta": _kumomta, "ses": _ses, "sendgrid": _sendgrid}
