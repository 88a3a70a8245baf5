"""Bounce classifier: what the remote server said -> hard / soft / ignored, with a failure reason.

Rules are data (TOML, see consumer/ingest/README.md): user files, then the packaged `rules/default.toml`. A rule's
conditions are any of an enhanced-code pattern, a reply-code range, the status class, a vendor hint and a text
regex. User rules are tried first, in file order; the packaged ones by the rank of their evidence (clear wording,
then the vendor's category, then the enhanced code, then weak wording, then the bare status class), file order
within a rank. The first rule whose conditions all hold wins. Inputs matching no rule get FALLBACK.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, Literal

from consumer.core.status import PLATFORM_REASONS
from consumer.ingest.textindex import text_index

Kind = Literal["hard", "soft", "ignored"]
KINDS: tuple[Kind, ...] = ("hard", "soft", "ignored")

# The platform's failure reasons: the core's one list (README explains each).
REASONS = PLATFORM_REASONS

DEFAULT_RULES = Path(__file__).parent / "rules" / "default.toml"
MAX_TEXT_CHARS = 2_048  # only the start of a response is matched: bounds the cost of hostile input
CACHE_SIZE = 2_048  # entries of each of the two caches; 0 disables them

_ENHANCED = re.compile(r"\s*([245])\.(\d{1,3})\.(\d{1,3})\s*")
_ENHANCED_IN_TEXT = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?!\d|\.\d)")
_CODE_IN_TEXT = re.compile(r"\s*(?:smtp\s*;\s*)?([245]\d\d)(?:[\s\-]|$)", re.IGNORECASE)
# A line break and the "550-5.1.1 " that starts each continuation line of a multi-line reply: one space, so that
# a phrase split over lines still matches.
_LINE_BREAK = re.compile(r"\s*[\r\n]+\s*(?:[245]\d\d[ \-](?:[245]\.\d{1,3}\.\d{1,3} +)?)?")
# A reply quoted inside another, with its own enhanced code: "5.1.0 - Unknown address error 550-'5.7.1 ...'". The
# quote mark tells it from a transcript's next reply ("550 5.1.1 user unknown 554 5.5.1 no valid recipients"), which
# only follows from the first.
_QUOTED_REPLY = re.compile(r"(?<=[\s(])[245]\d\d[ -]['\"]([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
# A reply code inside a transcript of several replies ("450 busy - please try later 551 not our user"): its class.
_REPLY_CODE = re.compile(r"(?<![\w.#-])([245])\d\d(?=[ -])")
_PATTERN_PIECES = re.compile(r"\\.|[^\\]+", re.DOTALL)  # an escape, or a run of anything else
_PATTERN_PART = re.compile(r"\*|\d{1,3}")
_RULE_KEYS = frozenset({"id", "kind", "reason", "enhanced", "code", "class", "hint", "text", "weak"})
_RULE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}")

Enhanced = tuple[int, int, int]
Pattern = tuple[int | None, int | None, int | None]  # None is a wildcard


@dataclass(frozen=True, slots=True)
class Classification:
    kind: Kind
    reason: str
    rule: str  # id of the rule that decided
    overrode: str | None = None  # the code or hint rule it beat, when that one would have said otherwise

    @property
    def explained(self) -> str:
        """What decided and what it overrode: the ingest stage's `sendtrack.bounce.rule` header."""
        return f"{self.rule} over {self.overrode}" if self.overrode else self.rule


# Evidence ranks of the packaged rules, strongest first (user rules come before all of them).
USER, TEXT, HINT, CODE, WEAK_TEXT, CLASS = range(6)

FALLBACK = Classification("soft", "unknown", "fallback")  # nothing known: retrying may help, so not hard


class RuleError(ValueError):
    """A rule file that cannot be used; the message names the file and the rule."""


@dataclass(frozen=True, slots=True)
class Rule:
    result: Classification
    rank: int = USER
    enhanced: tuple[Pattern, ...] = ()
    code: tuple[int, int] | None = None
    classes: frozenset[int] = frozenset()
    hints: frozenset[str] = frozenset()
    text: re.Pattern[str] | None = None

    def applies(self, code: int | None, enhanced: Enhanced | None, status_class: int | None, hint: str | None) -> bool:
        """Every condition except the text one (which is checked last, only on the survivors)."""
        if self.enhanced and (enhanced is None or not any(_fits(p, enhanced) for p in self.enhanced)):
            return False
        if self.code and (code is None or not self.code[0] <= code <= self.code[1]):
            return False
        if self.classes and status_class not in self.classes:
            return False
        return not self.hints or hint in self.hints


def _fits(pattern: Pattern, code: Enhanced) -> bool:
    return all(p is None or p == c for p, c in zip(pattern, code, strict=True))


@dataclass(frozen=True, slots=True)
class Plan:
    """What the non-text conditions leave for one (code, enhanced code, hint)."""

    texts: int  # the TextIndex branches of the text rules to try, those before `stop`
    stop: Rule | None  # the first rule without a text condition: it decides when no earlier text rule matches
    verdict: Rule | None  # what the codes and the hint alone say, when a text rule beats it (see _filter)


class Classifier:
    def __init__(self, rules: Sequence[Rule], cache_size: int = CACHE_SIZE) -> None:
        self.rules = tuple(sorted(rules, key=lambda rule: rule.rank))  # stable: file order within a rank
        self._index = text_index(tuple(rule.text.pattern if rule.text else None for rule in self.rules))
        # Which rules can apply depends only on (code, enhanced, hint): few distinct values, so remember them.
        self._candidates = lru_cache(maxsize=cache_size)(self._filter)
        # Identical responses are common (one text per domain and error): remember recent results too.
        self._classify = lru_cache(maxsize=cache_size)(self._resolve)
        # What decides nothing: the bare status class, or no rule at all.
        self._undecided = frozenset({FALLBACK.rule} | {r.result.rule for r in self.rules if r.rank == CLASS})

    @classmethod
    def load(cls, extra: Sequence[Path] = (), cache_size: int = CACHE_SIZE) -> Classifier:
        """User rule files first (in the given order), then the packaged defaults."""
        seen: dict[str, Path] = {}
        defaults = load_rules(DEFAULT_RULES, seen, ranked=True)  # read first: a clashing id is the user file's fault
        users = [rule for path in extra for rule in load_rules(path, seen)]
        return cls([*users, *defaults], cache_size)

    def classify(
        self, code: int | None, enhanced: str | None, text: str | None, hint: str | None = None
    ) -> Classification:
        """Total: any input gives one Classification. `hint` is a vendor's category, e.g. "ses:Permanent/NoEmail"."""
        return self._classify(*normalise(code, enhanced, text, hint))

    def _resolve(
        self, code: int | None, enhanced: Enhanced | None, text: str | None, hint: str | None
    ) -> Classification:
        """A reply quoted inside the text with an enhanced code of its own is the remote server's: when it says
        anything more than its status class, it decides (the text around it is a relay's summary)."""
        quoted = quoted_reply(code, enhanced, text, hint)
        if quoted is not None:
            inner = self._decide(*quoted)
            if inner.rule not in self._undecided:
                return inner
        return self._decide(code, enhanced, text, hint)

    def _decide(
        self, code: int | None, enhanced: Enhanced | None, text: str | None, hint: str | None
    ) -> Classification:
        """The first candidate rule, in order, whose text condition holds (or that has none)."""
        plan = self._candidates(code, enhanced, hint)
        found = self._index.first(text, plan.texts) if text is not None and plan.texts else None
        rule = self.rules[found] if found is not None else plan.stop
        return FALLBACK if rule is None else _outcome(rule, plan.verdict, _status_class(code, enhanced), text)

    def _filter(self, code: int | None, enhanced: Enhanced | None, hint: str | None) -> Plan:
        """The text rules to try, the rule that decides when none matches, and that rule as the verdict when it is
        a hint or code rule: what the codes and the hint alone say (a bare class says too little to be overridden)."""
        status_class = _status_class(code, enhanced)
        texts = 0
        for position, rule in enumerate(self.rules):
            if not rule.applies(code, enhanced, status_class, hint):
                continue
            if rule.text is None:
                return Plan(texts, rule, rule if rule.rank <= CODE else None)
            texts |= self._index.rule_bits[position]
        return Plan(texts, None, None)


def normalise(
    code: int | None, enhanced: str | None, text: str | None, hint: str | None
) -> tuple[int | None, Enhanced | None, str | None, str | None]:
    """What the rules see: a valid reply code and enhanced code (else read from the text's start), the text's
    first MAX_TEXT_CHARS lower-cased (rule patterns are) with a multi-line reply joined, the hint case-folded."""
    text = text[:MAX_TEXT_CHARS].lower() if isinstance(text, str) else None
    if text and ("\n" in text or "\r" in text):
        text = _LINE_BREAK.sub(" ", text)
    parsed = _parse_enhanced(enhanced) or _enhanced_in(text)
    if not (isinstance(code, int) and 200 <= code <= 599):
        code = _code_in(text)
    return code, parsed, text, hint.casefold() if isinstance(hint, str) else None


def quoted_reply(
    code: int | None, enhanced: Enhanced | None, text: str | None, hint: str | None
) -> tuple[int | None, Enhanced | None, str | None, str | None] | None:
    """The normalised reply that a relay quotes after its own summary ("5.1.0 - Unknown address error 550-'5.2.2
    ... Mailbox Full'"), when its enhanced code differs from the summary's: the relay's code is its guess, the
    quoted one the remote server's own word. A multi-line reply repeating one code quotes nothing; a transcript's
    later replies are not quoted."""
    if text is None or enhanced is None or not ("'" in text or '"' in text):  # a quick test: most texts quote nothing
        return None
    for match in _QUOTED_REPLY.finditer(text, 1):
        if (int(match[1]), int(match[2]), int(match[3])) != enhanced:
            return normalise(None, None, text[match.start() :], hint)
    return None


def _status_class(code: int | None, enhanced: Enhanced | None) -> int | None:
    return enhanced[0] if enhanced else (code // 100 if code else None)


def _outcome(rule: Rule, verdict: Rule | None, status_class: int | None, text: str | None) -> Classification:
    """The winning rule's result, never hard for a 4xx reply (the server says the failure is temporary), naming
    the code or hint rule it beat when that one would have decided otherwise."""
    kind, reason = rule.result.kind, rule.result.reason
    if kind == "hard" and _governing_class(rule, status_class, text) == 4:
        kind = "soft"
    beaten = (
        verdict is not None and verdict is not rule and (verdict.result.kind, verdict.result.reason) != (kind, reason)
    )
    if kind == rule.result.kind and not beaten:
        return rule.result
    return Classification(kind, reason, rule.result.rule, verdict.result.rule if beaten else None)


def _governing_class(rule: Rule, status_class: int | None, text: str | None) -> int | None:
    """The class of the reply that the deciding words belong to. A transcript of several replies gives each its own
    code ("450 busy - please try later 551 not our user 503 need RCPT command"): the last reply code before the
    words governs them (here 551: the recipient was refused for good, the 450 was about the connection)."""
    match = rule.text.search(text) if status_class == 4 and rule.text is not None and text is not None else None
    codes = _REPLY_CODE.findall(text, 0, match.start()) if match and text else []
    return int(codes[-1]) if codes else status_class


@cache
def default_classifier() -> Classifier:
    return Classifier.load()


def _parse_enhanced(value: object) -> Enhanced | None:
    return _parse_enhanced_string(value) if isinstance(value, str) else None


@lru_cache(maxsize=256)  # few distinct codes: spares a regex per call
def _parse_enhanced_string(value: str) -> Enhanced | None:
    match = _ENHANCED.fullmatch(value)
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def _enhanced_in(text: str | None) -> Enhanced | None:
    match = _ENHANCED_IN_TEXT.search(text, 0, 400) if text else None
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def _code_in(text: str | None) -> int | None:
    match = _CODE_IN_TEXT.match(text) if text else None
    return int(match[1]) if match else None


# --- rule files ---------------------------------------------------------------------------------------------


def load_rules(path: Path, seen: dict[str, Path] | None = None, ranked: bool = False) -> list[Rule]:
    """Parse one rule file; `seen` collects rule ids across files so that an id names exactly one rule. Rules of a
    `ranked` file (the packaged one) are ranked by their evidence; a user's rules all come first, in file order."""
    seen = {} if seen is None else seen
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RuleError(f"{path}: cannot read rules: {exc}") from None
    unknown = sorted(set(document) - {"rule"})
    if unknown:
        raise RuleError(f"{path}: unknown top-level key {unknown[0]!r}; rules are [[rule]] tables")
    tables = document.get("rule", [])
    if not isinstance(tables, list):
        raise RuleError(f"{path}: 'rule' must be an array of tables ([[rule]])")
    return [_rule(path, index, table, seen, ranked) for index, table in enumerate(tables)]


def _rule(path: Path, index: int, table: Any, seen: dict[str, Path], ranked: bool) -> Rule:
    rule_id = table.get("id") if isinstance(table, dict) else None
    where = f"{path}: rule {rule_id!r}" if isinstance(rule_id, str) else f"{path}: rule #{index + 1}"
    try:
        rule = _build(table, ranked)
    except (TypeError, ValueError, re.error) as exc:
        raise RuleError(f"{where}: {exc}") from None
    if rule_id == FALLBACK.rule:
        raise RuleError(f"{where}: the id {FALLBACK.rule!r} is reserved for inputs no rule matches")
    if rule_id in seen:
        raise RuleError(f"{where}: id already used in {seen[rule_id]}")
    seen[rule_id] = path
    return rule


def _build(table: Any, ranked: bool) -> Rule:
    if not isinstance(table, dict):
        raise TypeError("a rule must be a table")
    unknown = sorted(set(table) - _RULE_KEYS)
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} (expected {', '.join(sorted(_RULE_KEYS))})")
    rule_id = _required(table, "id")
    if not _RULE_ID.fullmatch(rule_id):
        raise ValueError("id must be 1-64 characters of letters, digits and _ . : -")
    kind, reason = _required(table, "kind"), _required(table, "reason")
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    if reason not in REASONS:
        raise ValueError(f"reason {reason!r} is not one of {', '.join(REASONS)}")
    weak = table.get("weak", False)
    if not isinstance(weak, bool):
        raise TypeError("weak must be true or false")
    rule = Rule(
        Classification(kind, reason, rule_id),
        enhanced=tuple(_pattern(p) for p in _strings(table, "enhanced")),
        code=_code_range(table.get("code")),
        classes=frozenset(_class(c) for c in _list(table.get("class"))),
        hints=frozenset(h.casefold() for h in _strings(table, "hint")),
        text=re.compile(_lower_pattern(table["text"])) if _text(table) else None,
    )
    if not (rule.enhanced or rule.code or rule.classes or rule.hints or rule.text):
        raise ValueError("a rule needs at least one condition: enhanced, code, class, hint or text")
    if weak and rule.text is None:
        raise ValueError("weak applies to a text condition only")
    return replace(rule, rank=_rank(rule, weak)) if ranked else rule


def _rank(rule: Rule, weak: bool) -> int:
    """The strength of a packaged rule's evidence: clear wording beats the vendor's category, which beats the
    enhanced code (servers misuse codes), which beats weak wording, which beats the bare reply code or class."""
    if rule.text is not None:
        return WEAK_TEXT if weak else TEXT
    return HINT if rule.hints else CODE if rule.enhanced else CLASS


def _lower_pattern(pattern: str) -> str:
    """The pattern with its literal letters in lower case (escapes such as \\S kept): matched against the
    lower-cased response it behaves like the original matched case-insensitively, and runs several times faster."""
    return _PATTERN_PIECES.sub(lambda m: m[0] if m[0].startswith("\\") else m[0].lower(), pattern)


def _required(table: dict[str, Any], key: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value:
        raise TypeError(f"{key} must be a non-empty string")
    return value


def _text(table: dict[str, Any]) -> bool:
    if "text" in table and not (isinstance(table["text"], str) and table["text"]):
        raise TypeError("text must be a non-empty regular expression")
    return "text" in table


def _list(value: Any) -> list[Any]:
    return [] if value is None else value if isinstance(value, list) else [value]


def _strings(table: dict[str, Any], key: str) -> Iterable[str]:
    values = _list(table.get(key))
    if not all(isinstance(v, str) and v for v in values):
        raise TypeError(f"{key} must be a string or a list of strings")
    return values


def _pattern(text: str) -> Pattern:
    parts = text.split(".")
    if len(parts) != 3 or not all(_PATTERN_PART.fullmatch(p) for p in parts) or parts[0] not in ("2", "4", "5", "*"):
        raise ValueError(f"enhanced pattern {text!r} is not like 5.1.1, 5.7.* or *.2.2")
    a, b, c = (None if p == "*" else int(p) for p in parts)
    return (a, b, c)


def _code_range(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    low, high = (value, value) if isinstance(value, int) else value if _pair(value) else (None, None)
    if not all(isinstance(v, int) and not isinstance(v, bool) and 200 <= v <= 599 for v in (low, high)):
        raise ValueError("code must be a reply code (200-599) or a [low, high] range of them")
    if low > high:
        raise ValueError(f"code range [{low}, {high}] is empty")
    return (low, high)


def _pair(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2


def _class(value: Any) -> int:
    if value not in (2, 4, 5) or isinstance(value, bool):
        raise ValueError("class must be 2, 4 or 5, or a list of them")
    return value
