from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench import corpus
from consumer.ingest.classifier import (
    CODE,
    DEFAULT_RULES,
    FALLBACK,
    KINDS,
    REASONS,
    Classification,
    Classifier,
    RuleError,
    _outcome,
    _status_class,
    default_classifier,
    load_rules,
    normalise,
)
from consumer.ingest.textindex import TextIndex, alternatives, needles

GMAIL_NO_SUCH_USER = (
    "The email account that you tried to reach does not exist. Please try double-checking the recipient's email "
    "address for typos or unnecessary spaces. Learn more at https://support.google.com/mail/?p=NoSuchUser "
    "41be03b00d2f7-7e9a1b2c3d4si1234567a12.300 - gsmtp"
)

# (reply code, enhanced code, response text, vendor hint) -> (kind, reason): responses as real servers send them.
# fmt: off
TABLE = [
    # Gmail
    ((550, "5.1.1", GMAIL_NO_SUCH_USER, None), ("hard", "user_unknown")),
    ((None, None, "smtp; 550-5.1.1 The email account that you tried to reach does not exist. Please try\n"
      "550-5.1.1 double-checking the recipient's email address for typos or\n550 5.1.1 unnecessary spaces.", None),
     ("hard", "user_unknown")),
    ((550, "5.2.1", "The email account that you tried to reach is disabled. Learn more at "
      "https://support.google.com/mail/?p=DisabledUser - gsmtp", None), ("hard", "account_disabled")),
    ((452, "4.2.2", "The email account that you tried to reach is over quota. Please direct the recipient to "
      "https://support.google.com/mail/?p=OverQuotaTemp - gsmtp", None), ("soft", "mailbox_full")),
    ((421, "4.7.0", "[198.51.100.7] Our system has detected an unusual rate of\nunsolicited mail originating "
      "from your IP address. To protect our users from spam, mail sent from your\nIP address has been "
      "temporarily rate limited.", None), ("soft", "refused")),
    ((550, "5.7.26", "This mail has been blocked because the sender is unauthenticated. Gmail requires all senders "
      "to authenticate with either SPF or DKIM.", None), ("soft", "refused")),
    ((550, "5.7.1", "[198.51.100.7] Our system has detected that this message is likely unsolicited mail. To "
      "reduce the amount of spam sent to Gmail, this message has been blocked.", None), ("soft", "refused")),
    ((450, "4.2.1", "The user you are trying to contact is receiving mail at a rate that prevents additional "
      "messages from being delivered.", None), ("soft", "unreachable")),
    ((552, "5.3.4", "Your message exceeded Google's message size limits.", None), ("soft", "text_too_long")),
    ((550, "5.1.2", "We weren't able to find the recipient domain. Please check for any spelling errors.", None),
     ("hard", "invalid_domain")),
    # Outlook.com, Hotmail, Microsoft 365
    ((550, "5.5.0", "Requested action not taken: mailbox unavailable (S2017062302). "
      "[AM4PEPF00027A5F.eurprd04.prod.outlook.com]", None), ("hard", "user_unknown")),
    ((550, "5.1.10", "RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup", None),
     ("hard", "user_unknown")),
    ((550, "5.4.1", "Recipient address rejected: Access denied. For more information see "
      "https://aka.ms/EXOSmtpErrors [DB5PEPF00014B8E.eurprd02.prod.outlook.com]", None), ("hard", "user_unknown")),
    ((550, "5.1.1", "RESOLVER.ADR.ExRecipNotFound; not found", None), ("hard", "user_unknown")),
    ((554, "5.2.2", "mailbox full; STOREDRV.Deliver.Exception:QuotaExceededException."
      "MapiExceptionShutoffQuotaExceeded", None), ("soft", "mailbox_full")),
    ((550, "5.7.1", "Unfortunately, messages from [198.51.100.7] weren't sent. Please contact your Internet "
      "service provider since part of their network is on our block list (S3150).", None), ("soft", "refused")),
    ((451, "4.7.650", "The mail server [198.51.100.7] has been temporarily rate limited due to IP reputation.",
      None), ("soft", "refused")),
    ((550, "5.7.708", "Service unavailable. Access denied, traffic not accepted from this IP.", None),
     ("soft", "refused")),
    # Yahoo, AOL
    ((554, None, "delivery error: dd This user doesn't have a yahoo.com account (no.one@yahoo.com) [0] - "
      "mta1234.mail.gq1.yahoo.com", None), ("hard", "user_unknown")),
    ((554, None, "delivery error: dd Sorry your message to x@yahoo.com cannot be delivered. This mailbox is "
      "disabled (554.30). - mta4012.mail.bf1.yahoo.com", None), ("hard", "account_disabled")),
    ((421, "4.7.0", "[TSS04] Messages from 198.51.100.7 temporarily deferred due to unexpected volume or user "
      "complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes", None), ("soft", "refused")),
    ((553, "5.7.2", "[TSS09] All messages from 198.51.100.7 will be permanently deferred; Retrying will NOT "
      "succeed. See https://postmaster.yahooinc.com/error-codes", None), ("soft", "refused")),
    ((552, None, "1 Requested mail action aborted, mailbox not found", None), ("hard", "user_unknown")),
    # Apple iCloud
    ((550, "5.1.1", "<x@icloud.com>: user does not exist", None), ("hard", "user_unknown")),
    ((554, "5.7.1", "[CS01] Message rejected due to local policy. Please visit "
      "https://support.apple.com/en-us/HT204137", None), ("soft", "refused")),
    # GMX / WEB.DE, Orange, Mail.ru
    ((550, None, "Requested action not taken: mailbox unavailable", None), ("hard", "user_unknown")),
    ((554, None, "Transaction failed\nReject due to policy restrictions.\nFor explanation visit "
      "https://postmaster.gmx.net/en/error-messages?ip=198.51.100.7&c=sp", None), ("soft", "refused")),
    ((550, "5.1.1", "Adresse d au moins un destinataire invalide. Invalid recipient. OFR_416 [416]", None),
     ("hard", "user_unknown")),
    ((421, None, "mwinf5c10 ME Service refuse. Veuillez essayer plus tard. service refused, please try later. "
      "OFR004_104 [104]", None), ("soft", "refused")),
    ((550, None, "Message was not accepted -- invalid mailbox. Local mailbox x@mail.ru is unavailable: user not "
      "found", None), ("hard", "user_unknown")),
    # Block lists and enterprise filters
    ((554, "5.7.1", "Service unavailable; Client host [198.51.100.7] blocked using zen.spamhaus.org; "
      "https://www.spamhaus.org/query/ip/198.51.100.7", None), ("soft", "refused")),
    ((554, None, "Service unavailable; Client host [198.51.100.7] blocked using Spamhaus", None),
     ("soft", "refused")),
    ((550, None, "Envelope blocked - User Entry - https://community.mimecast.com/docs/DOC-1369#550 [abc.us5]",
      None), ("soft", "refused")),
    ((554, None, "Blocked - see https://ipcheck.proofpoint.com/?ip=198.51.100.7", None), ("soft", "refused")),
    # Postfix, Exim, Sendmail and other MTAs
    ((550, "5.1.1", "<bob@example.org>: Recipient address rejected: User unknown in virtual mailbox table", None),
     ("hard", "user_unknown")),
    ((450, "4.2.0", "<paul@small-isp.example>: Recipient address rejected: Greylisted, see "
      "http://postgrey.schweikert.ch/help/small-isp.example.html", None), ("ignored", "error_ignored")),
    ((554, "5.7.1", "<x@example.org>: Relay access denied", None), ("soft", "refused")),
    ((450, "4.1.2", "<x@nodomain.example>: Recipient address rejected: Domain not found", None),
     ("soft", "invalid_domain")),
    ((550, "5.1.2", "Host unknown (Name server: nodomain.example: host not found)", None),
     ("hard", "invalid_domain")),
    ((550, "5.4.4", "Unrouteable address", None), ("hard", "invalid_domain")),
    ((550, None, "unrouteable address", None), ("hard", "invalid_domain")),
    ((451, "4.4.1", "No answer from host", None), ("soft", "not_connected")),
    ((421, None, "Connection timed out", None), ("soft", "not_connected")),
    ((None, None, "KumoMTA internal: failed to connect to any candidate hosts: connect to 203.0.113.25:25: "
      "Connection refused (os error 111)", None), ("soft", "not_connected")),
    ((451, "4.3.0", "Temporary local problem - please try later", None), ("soft", "unreachable")),
    ((452, "4.3.1", "Insufficient system storage", None), ("soft", "mailbox_full")),
    ((552, "5.3.4", "Message size exceeds fixed maximum message size", None), ("soft", "text_too_long")),
    ((530, "5.7.0", "Must issue a STARTTLS command first", None), ("soft", "refused")),
    ((550, "5.7.1", "Message rejected as spam by Content Filtering.", None), ("soft", "refused")),
    ((550, "5.7.13", "User account is disabled", None), ("hard", "account_disabled")),
    ((550, None, "This account has been suspended", None), ("hard", "account_disabled")),
    ((550, None, "The mailbox is inactive", None), ("hard", "inactive_mailbox")),
    ((None, None, "Out of Office: back on Monday", None), ("ignored", "error_ignored")),
    ((250, "2.0.0", "OK", None), ("ignored", "error_ignored")),
    # Last resorts
    ((550, "5.0.0", "Something we have never seen", None), ("soft", "unknown")),  # undetermined: not hard
    ((451, None, "Please come back", None), ("soft", "unknown")),
    ((None, None, "gibberish", None), ("soft", "unknown")),
    ((None, None, None, None), ("soft", "unknown")),
    # Vendors' own categories
    ((None, None, None, "ses:Permanent/NoEmail"), ("hard", "user_unknown")),
    ((None, "5.1.1", "Amazon SES did not send the message to this address because it is on the suppression list "
      "for your account.", "ses:Permanent/OnAccountSuppressionList"), ("hard", "denylisted")),
    ((None, None, "smtp; 452 4.2.2 Mailbox full", "ses-delay:MailboxFull"), ("soft", "mailbox_full")),
    ((None, None, "Bounced Address", "sendgrid-dropped:Bounced Address"), ("hard", "denylisted")),
    ((None, None, None, "kumomta:InactiveMailbox"), ("hard", "inactive_mailbox")),
    ((None, None, None, "KUMOMTA:quotaissues"), ("soft", "mailbox_full")),
]
# fmt: on


@pytest.mark.parametrize(("given_", "expected"), TABLE, ids=[f"{i}:{row[0][2]!s:.40}" for i, row in enumerate(TABLE)])
def test_real_world_responses(given_, expected):
    result = default_classifier().classify(*given_)
    assert (result.kind, result.reason) == expected, result.rule


def test_the_table_is_large_and_exercises_many_rules():
    rules = {default_classifier().classify(*given_).rule for given_, _ in TABLE}
    assert len(TABLE) >= 40
    assert len(rules) >= 40


def test_the_deciding_rule_is_returned():
    result = default_classifier().classify(550, "5.1.1", GMAIL_NO_SUCH_USER)
    assert result == Classification("hard", "user_unknown", "gmail.no-such-account")
    assert default_classifier().classify(550, "5.1.1", "no text we know").rule == "rfc3463.5.1.1"
    assert default_classifier().classify(None, None, None) == FALLBACK
    # Outlook's rate limiting shares Gmail's words; the rule named must be the provider's own.
    outlook = "The mail server [198.51.100.7] has been temporarily rate limited due to IP reputation. (S775)"
    assert default_classifier().classify(451, "4.7.650", outlook).rule == "outlook.block-list"
    gmail = "Our system has detected an unusual rate of unsolicited mail originating from your IP address. To protect"
    gmail += " our users from spam, mail sent from your IP address has been temporarily rate limited."
    assert default_classifier().classify(421, "4.7.28", gmail).rule == "gmail.unsolicited"


def test_codes_are_read_from_the_text_when_not_given():
    classify = default_classifier().classify
    assert classify(None, None, "550 5.1.1 <a@b.example>... whatever").rule == "rfc3463.5.1.1"
    assert classify(None, None, "smtp; 452 4.2.2 whatever").rule == "rfc3463.x.2.2"
    assert classify(None, None, "smtp;550 whatever").rule == "class.5"
    # A dotted number that is part of an IP address is not an enhanced code.
    assert classify(None, None, "451 from 10.5.1.1 please wait").rule == "class.4"


def test_malformed_codes_are_ignored_not_trusted():
    classify = default_classifier().classify
    assert classify(999, "9.9.9", "anything").rule == "fallback"
    assert classify(550, "5.1", "anything").rule == "class.5"
    assert classify(True, "5.1.1.1", None).rule == "fallback"


hints = st.one_of(st.none(), st.text(), st.sampled_from(["ses:Permanent/NoEmail", "kumomta:QuotaIssues"]))
codes = st.one_of(st.none(), st.integers(), st.sampled_from([250, 421, 450, 550, 552, 554]))
enhanced = st.one_of(
    st.none(),
    st.text(),
    st.builds("{}.{}.{}".format, st.sampled_from([2, 4, 5, 9]), st.integers(0, 999), st.integers(0, 999)),
)
# Lone surrogates included: JSON can carry them.
texts = st.one_of(st.none(), st.text(st.characters(exclude_categories=())), st.text(max_size=5000))


@given(codes, enhanced, texts, hints)
def test_classification_is_total(code, enhanced_code, text, hint):
    classifier = default_classifier()
    result = classifier.classify(code, enhanced_code, text, hint)
    assert result.kind in KINDS
    assert result.reason in REASONS
    assert result == FALLBACK or result.rule in {rule.result.rule for rule in classifier.rules}


@given(st.text(st.characters(exclude_categories=())), st.text(max_size=20))
def test_classification_does_not_depend_on_the_cache(text, hint):
    fresh = Classifier.load()
    assert fresh.classify(550, None, text, hint) == default_classifier().classify(550, None, text, hint)


# --- rule files ---------------------------------------------------------------------------------------------


def rules_file(tmp_path: Path, text: str, name: str = "mine.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_user_rules_are_tried_before_the_defaults_in_file_order(tmp_path):
    first = rules_file(
        tmp_path,
        """
[[rule]]
id = "acme.parked"
kind = "hard"
reason = "inactive_mailbox"
text = 'mailbox parked'

[[rule]]
id = "acme.gmail-is-soft"
kind = "soft"
reason = "user_unknown"
enhanced = "5.1.1"
text = 'gsmtp'

[[rule]]
id = "acme.never-reached"
kind = "ignored"
reason = "error_ignored"
text = 'gsmtp'
""",
    )
    second = rules_file(
        tmp_path, '[[rule]]\nid = "acme.second"\nkind = "hard"\nreason = "refused"\ncode = 550\n', "b.toml"
    )
    classifier = Classifier.load([first, second])
    assert classifier.classify(550, "5.2.0", "mailbox parked since 2020").rule == "acme.parked"
    assert classifier.classify(550, "5.1.1", GMAIL_NO_SUCH_USER).rule == "acme.gmail-is-soft"
    assert classifier.classify(550, "5.7.1", "blocked").rule == "acme.second"
    assert classifier.classify(421, None, "Connection timed out").rule == "text.not-connected"  # the defaults follow


def test_rule_conditions_must_all_hold(tmp_path):
    path = rules_file(
        tmp_path,
        """
[[rule]]
id = "acme.all"
kind = "hard"
reason = "refused"
code = [550, 553]
enhanced = ["5.7.*", "5.6.1"]
class = 5
hint = "acme:Blocked"
text = 'spam'
""",
    )
    classify = Classifier.load([path]).classify
    assert classify(551, "5.7.9", "SPAM!", "ACME:blocked").rule == "acme.all"
    assert classify(554, "5.7.9", "spam", "acme:blocked").rule != "acme.all"  # code out of range
    assert classify(551, "5.1.1", "spam", "acme:blocked").rule != "acme.all"  # enhanced
    assert classify(551, "5.7.9", "ham", "acme:blocked").rule != "acme.all"  # text
    assert classify(551, "5.7.9", "spam", None).rule != "acme.all"  # hint


BAD_RULES = [
    ("[[rule]\nid = 1", "cannot read rules"),
    ('version = 2\n[[rule]]\nid = "a"\nkind = "hard"\nreason = "refused"\ncode = 550', "unknown top-level key"),
    ('rule = "x"', "array of tables"),
    ('[[rule]]\nid = "acme.x"\nkind = "hard"\nreason = "refused"\ncode = 550\ncolour = "red"', "'acme.x': unknown key"),
    ('[[rule]]\nkind = "hard"\nreason = "refused"\ncode = 550', "rule #1: id must be"),
    ('[[rule]]\nid = "bad id!"\nkind = "hard"\nreason = "refused"\ncode = 550', "id must be 1-64"),
    ('[[rule]]\nid = "acme.x"\nkind = "fatal"\nreason = "refused"\ncode = 550', "'acme.x': kind 'fatal'"),
    ('[[rule]]\nid = "acme.x"\nkind = "hard"\nreason = "gone"\ncode = 550', "'acme.x': reason 'gone'"),
    ('[[rule]]\nid = "acme.x"\nkind = "hard"\nreason = "refused"\ntext = "(unclosed"', "'acme.x': missing )"),
    ('[[rule]]\nid = "acme.x"\nkind = "hard"\nreason = "refused"\ntext = ""', "'acme.x': text must be"),
    ('[[rule]]\nid = "acme.x"\nkind = "hard"\nreason = "refused"', "'acme.x': a rule needs at least one condition"),
    ('[[rule]]\nid = "acme.x"\nkind = "hard"\nreason = "refused"\nenhanced = "5.1"', "enhanced pattern '5.1'"),
    ('[[rule]]\nid = "acme.x"\nkind = "hard"\nreason = "refused"\nenhanced = "3.1.1"', "enhanced pattern '3.1.1'"),
    ('[[rule]]\nid = "acme.x"\nkind = "hard"\nreason = "refused"\ncode = [559, 550]', "code range [559, 550]"),
    ('[[rule]]\nid = "acme.x"\nkind = "hard"\nreason = "refused"\ncode = [550]', "'acme.x': code must be"),
    ('[[rule]]\nid = "acme.x"\nkind = "hard"\nreason = "refused"\ncode = 99', "'acme.x': code must be"),
    ('[[rule]]\nid = "acme.x"\nkind = "hard"\nreason = "refused"\nclass = 3', "'acme.x': class must be"),
    ('[[rule]]\nid = "acme.x"\nkind = "hard"\nreason = "refused"\nhint = [1]', "'acme.x': hint must be"),
    ('[[rule]]\nid = "fallback"\nkind = "hard"\nreason = "refused"\ncode = 550', "reserved"),
    ('[[rule]]\nid = "rfc3463.5.1.1"\nkind = "hard"\nreason = "refused"\ncode = 550', "already used in"),
    ("[[rule]]\nid = 'a'\n[[rule]]\nid = 'a'\nkind = 'x'", "'a': kind must be"),
    ('[[rule]]\nid = "acme.x"\nkind = "hard"\nreason = "refused"\ntext = "x"\nweak = "yes"', "weak must be true"),
    ('[[rule]]\nid = "acme.x"\nkind = "hard"\nreason = "refused"\ncode = 550\nweak = true', "weak applies to a text"),
]


@pytest.mark.parametrize(("text", "message"), BAD_RULES)
def test_bad_rule_files_name_the_file_and_the_rule(tmp_path, text, message):
    path = rules_file(tmp_path, text)
    with pytest.raises(RuleError) as caught:
        Classifier.load([path])
    assert str(caught.value).startswith(str(path))
    assert message in str(caught.value)


def test_a_missing_rule_file_is_named(tmp_path):
    with pytest.raises(RuleError, match=r"nowhere\.toml: cannot read rules"):
        Classifier.load([tmp_path / "nowhere.toml"])


def test_the_packaged_rules_load_and_use_every_reason():
    rules = load_rules(DEFAULT_RULES)
    assert DEFAULT_RULES.is_relative_to(Path(__file__).parents[2] / "consumer")
    assert {rule.result.reason for rule in rules} == set(REASONS)
    assert len(rules) == len(default_classifier().rules)


def rule_patterns() -> list[tuple[str, re.Pattern[str], re.Pattern[str]]]:
    """(id, the pattern as written compiled case-insensitively, the pattern the classifier uses)."""
    document = tomllib.loads(DEFAULT_RULES.read_text(encoding="utf-8"))
    written = {table["id"]: table["text"] for table in document["rule"] if "text" in table}
    used = {rule.result.rule: rule.text for rule in load_rules(DEFAULT_RULES) if rule.text is not None}
    return [(rule_id, re.compile(pattern, re.IGNORECASE), used[rule_id]) for rule_id, pattern in written.items()]


PATTERNS = rule_patterns()


def assert_same_matches(text: str) -> None:
    for rule_id, written, used in PATTERNS:
        assert (used.search(text.lower()) is None) == (written.search(text) is None), (rule_id, text)


def test_lower_cased_patterns_match_the_table_like_case_insensitive_ones():
    for given_, _ in TABLE:
        assert_same_matches(given_[2] or "")


@given(st.text(st.characters(codec="ascii"), max_size=200))
def test_lower_cased_patterns_match_like_case_insensitive_ones(text):
    assert_same_matches(text)


def test_the_rules_ship_in_the_wheel():
    """hatch packages the whole consumer/ directory (rules/*.toml included) unless a wheel setting excludes them."""
    wheel = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["tool"]["hatch"]["build"]
    target = wheel["targets"]["wheel"]
    assert "consumer" in target["packages"]
    assert not {"exclude", "only-include", "only-packages"} & set(target)  # any of these could drop them


# --- evidence ranking ---------------------------------------------------------------------------------------


def test_clear_words_beat_a_code_that_contradicts_them_and_the_header_says_so():
    classify = default_classifier().classify
    unknown = classify(550, "5.7.1", "<x@sfr.fr>: Recipient address rejected: User unknown")
    assert (unknown.kind, unknown.reason, unknown.explained) == (
        "hard",
        "user_unknown",
        "text.user-unknown over rfc3463.x.7",
    )
    full = classify(552, "5.1.1", "Boite du destinataire pleine. Recipient overquota. OFR_417 [417]")
    assert (full.kind, full.reason, full.overrode) == ("soft", "mailbox_full", "rfc3463.5.1.1")
    rate = classify(550, "5.1.1", "<a@b.example> - 198.51.100.7 has sent to too many recipients this hour. IB607")
    assert (rate.kind, rate.reason) == ("soft", "refused")
    # Agreeing evidence overrides nothing.
    assert classify(550, "5.1.1", GMAIL_NO_SUCH_USER).overrode is None


def test_weak_words_lose_to_a_code():
    assert default_classifier().classify(550, "5.1.1", "Access denied").rule == "rfc3463.5.1.1"
    assert default_classifier().classify(550, None, "Access denied").rule == "weak.refused"


def test_a_4xx_reply_is_never_hard():
    result = default_classifier().classify(450, "4.1.1", "<x@isp.example>: Recipient address rejected: User unknown")
    assert (result.kind, result.reason) == ("soft", "user_unknown")


def test_an_unrecognised_5xx_is_undetermined_not_hard():
    assert default_classifier().classify(550, None, "Something nothing knows") == Classification(
        "soft", "unknown", "class.5"
    )


def test_ses_suppression_is_denylisted_with_or_without_the_hint():
    text = "Amazon SES did not send the message to this address because it is on the suppression list for your account."
    for hint in (None, "ses:Permanent/OnAccountSuppressionList"):
        assert default_classifier().classify(None, "5.1.1", text, hint).reason == "denylisted"


def test_a_quoted_reply_with_its_own_code_is_the_remote_server_s_word():
    classify = default_classifier().classify
    relayed = classify(None, "5.1.0", "5.1.0 - Unknown address error 550-'5.7.1 <a@b.example>... Relaying denied'")
    assert (relayed.kind, relayed.reason) == ("soft", "refused")
    full = classify(None, "5.1.0", '5.1.0 - Unknown address error 552-"5.2.2 <a@b.example>... Mailbox over quota"')
    assert (full.kind, full.reason) == ("soft", "mailbox_full")
    # A quoted reply that says nothing beyond its class leaves the decision to the whole text.
    assert classify(None, "5.1.1", "5.1.1 - User unknown 550-'5.0.0 <a@b.example>... Nope'").reason == "user_unknown"
    # A transcript's next reply follows from the first; it is not quoted and decides nothing.
    after = classify(550, "5.1.1", "550 5.1.1 <a@b.example>: user unknown 554 5.5.1 Error: no valid recipients")
    assert (after.kind, after.reason) == ("hard", "user_unknown")


def test_in_a_transcript_the_reply_code_before_the_words_governs_them():
    classify = default_classifier().classify
    transcript = classify(450, None, "450 busy - please try later 550 no such user here 503 need RCPT command [data]")
    assert (transcript.kind, transcript.reason) == ("hard", "user_unknown")
    assert classify(450, None, "450 no such user here, try later 550 other").kind == "soft"
    assert classify(451, "4.1.1", "451 4.1.1 <a@b.example>: recipient unknown, try again later").kind == "soft"


def test_sender_address_codes_make_the_words_the_sender_s():
    classify = default_classifier().classify
    for given_ in ((550, "5.1.7", "No such domain sender.example"), (553, "5.1.8", "Domain of address does not exist")):
        assert (classify(*given_).kind, classify(*given_).reason) == ("soft", "refused"), given_


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("宛先のメールアドレスは存在しません", ("hard", "user_unknown")),
        ("ユーザー a@b.example が見つかりません", ("hard", "user_unknown")),
        ("メールボックスの容量を超えています", ("soft", "mailbox_full")),
    ],
)
def test_japanese_replies(text, expected):
    result = default_classifier().classify(550, None, text)
    assert (result.kind, result.reason) == expected


# Each family in other phrasings than the corpora's (the rules are written for the family, not for a reply).
@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        (550, "Der Empfänger ist unbekannt", ("hard", "user_unknown")),
        (550, "Utilisateur inconnu", ("hard", "user_unknown")),
        (550, "El usuario no existe en este servidor", ("hard", "user_unknown")),
        (550, "Utente sconosciuto", ("hard", "user_unknown")),
        (550, "Destinatário não existe", ("hard", "user_unknown")),
        (550, "Пользователь не найден", ("hard", "user_unknown")),
        (550, "收件人不存在", ("hard", "user_unknown")),
        (550, "<a@b.example> is not a valid user here", ("hard", "user_unknown")),
        (554, "Addressee <a@b.example> does not exist", ("hard", "user_unknown")),
        (552, "Das Postfach ist voll", ("soft", "mailbox_full")),
        (552, "La boîte aux lettres est pleine", ("soft", "mailbox_full")),
        (552, "El buzón está lleno", ("soft", "mailbox_full")),
        (552, "La casella è piena", ("soft", "mailbox_full")),
        (552, "A caixa postal está cheia", ("soft", "mailbox_full")),
        (552, "Почтовый ящик переполнен", ("soft", "mailbox_full")),
        (552, "邮箱空间不足", ("soft", "mailbox_full")),
        (552, "Nachricht ist zu groß", ("soft", "text_too_long")),
        (550, "Domaine inexistant", ("hard", "invalid_domain")),
        (550, "IP 192.0.2.1 is blacklisted", ("soft", "refused")),
        (550, "Sender address has been blocked", ("soft", "refused")),
        (550, "EHLO name rejected", ("soft", "refused")),
        (554, "Relaying not allowed", ("soft", "refused")),
        (554, "Message refused by the recipient", ("soft", "refused")),
        (550, "Please confirm your sender address first", ("soft", "refused")),
        (450, "The mailbox has reached its receiving rate, try later", ("soft", "unreachable")),
        (450, "Queue is full", ("soft", "unreachable")),
        (421, "Server shutting down", ("soft", "unreachable")),
        (554, "Looping detected", ("soft", "unreachable")),
        (550, "Delivery to command failed", ("soft", "unreachable")),
        (550, "The address <a@b.example> is inactive", ("hard", "inactive_mailbox")),
    ],
)
def test_vocabulary_families(code, text, expected):
    result = default_classifier().classify(code, None, text)
    assert (result.kind, result.reason) == expected, result.rule


def test_user_rules_use_the_core_reason_list(tmp_path):
    path = rules_file(
        tmp_path, '[[rule]]\nid = "acme.syntax"\nkind = "hard"\nreason = "invalid_address"\ntext = "bad"\n'
    )
    assert Classifier.load([path]).classify(550, None, "bad address").reason == "invalid_address"
    assert "invalid_address" in REASONS


# --- the fast path against a straightforward evaluation -------------------------------------------------------


def reference(classifier: Classifier, code, enhanced_code, text, hint) -> Classification:
    """The matching order as documented, evaluated the slow way on normalised input: every candidate rule in
    order, each text pattern searched whole."""
    status_class = _status_class(code, enhanced_code)
    candidates = [r for r in classifier.rules if r.applies(code, enhanced_code, status_class, hint)]
    verdict = next((r for r in candidates if r.text is None), None)
    verdict = verdict if verdict is not None and verdict.rank <= CODE else None
    for rule in candidates:
        if rule.text is None or (text is not None and rule.text.search(text)):
            return _outcome(rule, verdict, status_class, text)
    return FALLBACK


REPLIES = corpus.load()
INDEX = default_classifier()._index
UNCACHED = Classifier.load(cache_size=0)
NEEDLES = sorted({n for branch in INDEX.branches for n in branch.needles})
# Texts that exercise the index: real replies, pieces of two spliced together, and runs of the needles themselves
# (overlapping, repeated, cut) with random glue.
real_texts = st.sampled_from([reply.text for reply in REPLIES])
spliced = st.builds(lambda a, b, i, j: a[i:] + b[:j], real_texts, real_texts, st.integers(0, 200), st.integers(0, 400))
needle_soup = st.lists(st.one_of(st.sampled_from(NEEDLES), st.text(max_size=3)), max_size=12).map("".join)
any_text = st.one_of(real_texts, spliced, needle_soup, st.text(max_size=300), st.none())
real_codes = st.sampled_from([(r.code, r.enhanced, r.hint) for r in REPLIES])


@given(any_text, st.one_of(real_codes, st.tuples(codes, enhanced, hints)))
def test_the_index_decides_exactly_like_searching_every_rule_in_order(text, codes_and_hint):
    given_ = normalise(codes_and_hint[0], codes_and_hint[1], text, codes_and_hint[2])
    got = UNCACHED._decide(*given_)
    want = reference(default_classifier(), *given_)
    assert (got.kind, got.reason, got.explained) == (want.kind, want.reason, want.explained)


def test_the_index_decides_every_corpus_reply_like_the_reference():
    for reply in REPLIES:
        given_ = normalise(reply.code, reply.enhanced, reply.text, reply.hint)
        assert UNCACHED._decide(*given_) == reference(UNCACHED, *given_), reply.text


@given(st.one_of(any_text.filter(lambda t: t is not None), st.text(st.characters(codec="ascii"), max_size=300)))
def test_the_needle_scan_never_rejects_a_branch_that_matches(text):
    lowered = text.lower()
    present = INDEX.present(lowered)
    for bit, branch in enumerate(INDEX.branches):
        if branch.text.search(lowered):
            assert present >> bit & 1, (branch.text.pattern, lowered)


@given(st.lists(st.text("ab", min_size=3, max_size=6), min_size=1, max_size=8), st.text("ab", max_size=40))
def test_overlapping_needles_are_all_found(words, text):
    """Literal patterns over two letters overlap in every way: each one in the text must be found."""
    index = TextIndex(words)
    present = index.present(text)
    assert [word in text for word in words] == [bool(present & index.rule_bits[i]) for i in range(len(words))]


@given(st.lists(st.text("aé", min_size=3, max_size=6), min_size=1, max_size=8), st.text("aé", max_size=40))
def test_needles_of_two_scans_are_all_found(words, text):
    """ASCII needles and the others are scanned separately (the second scan only for non-ASCII texts): needles of
    both kinds overlapping each other must all be found."""
    index = TextIndex(words)
    present = index.present(text)
    assert [word in text for word in words] == [bool(present & index.rule_bits[i]) for i in range(len(words))]


def test_patterns_split_into_their_alternatives_and_nothing_else():
    assert alternatives("(a|(b|c))") == ["a", "b", "c"]
    assert alternatives("(?:ab|cd)|ef") == ["ab", "cd", "ef"]
    assert alternatives("(a|b)c") == ["(a|b)c"]
    assert alternatives("(a|b)+") == ["(a|b)+"]
    assert alternatives(r"[|(]x|\|y") == ["[|(]x", r"\|y"]
    assert alternatives("[]|]|z") == ["[]|]", "z"]
    assert alternatives(r"(a)b|\1") == [r"(a)b|\1"]  # a back-reference ties the alternatives together
    assert alternatives("(?=a|b)c") == ["(?=a|b)c"]


def test_needles_are_found_for_the_packaged_patterns():
    assert needles("(user unknown|no such (user|mailbox))") == ("no such", "user unknown")
    assert needles(" at ") == (" at ",)  # too short without its spaces
    assert needles("x+") == ()
    without = [branch.text.pattern for branch in INDEX.branches if not branch.needles]
    assert len(INDEX.branches) >= 200
    assert len(without) <= 2, without
