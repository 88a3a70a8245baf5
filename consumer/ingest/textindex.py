"""Which text patterns can match a response, found in one pass over it: the classifier's speed.

Each text pattern is split into its top-level alternatives ("branches"); each branch gets the literal strings one of
which any match of it must contain (its needles, read with Python's own regex parser). One regex holding every
needle of every pattern as a trie is searched over the response once (restarting only where a needle could begin
inside the one just found), which tells the needles present; only branches with a needle present, or without
needles, then run, in rule order. Skipping a branch whose needles are all absent cannot change a result: it could
not have matched. `TextIndex.first` therefore gives what searching each pattern in order would.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

try:  # Python's own regex parser: tells which literals a pattern requires (see `needles`)
    from re import _constants as _sre_constants
    from re import _parser as _sre_parser
except ImportError:  # pragma: no cover - older layouts
    import sre_constants as _sre_constants  # type: ignore[no-redef]
    import sre_parse as _sre_parser  # type: ignore[no-redef]

_LITERAL, _SUBPATTERN, _BRANCH = _sre_constants.LITERAL, _sre_constants.SUBPATTERN, _sre_constants.BRANCH
_REPEATS = (_sre_constants.MAX_REPEAT, _sre_constants.MIN_REPEAT, getattr(_sre_constants, "POSSESSIVE_REPEAT", None))
_MIN_NEEDLE = 3  # shorter literals are too common to reject anything
_FREQUENT = " etaoinsrhldcumfpgwybvkxjqz0123456789.-:;<>@[]()"  # space, English letter frequency, then the rest
# Constructs whose meaning depends on the whole pattern (back-references, conditionals, inline flags): a pattern
# holding one is kept whole rather than split into alternatives.
_UNSPLITTABLE = re.compile(r"\\[1-9]|\(\?P=|\(\?\(|\(\?[aiLmsux-]")


@dataclass(frozen=True, slots=True)
class Branch:
    rule: int  # position of its rule in the pattern list the index was built from
    text: re.Pattern[str]
    needles: tuple[str, ...]  # empty: none could be told, the branch always runs


class TextIndex:
    """The branches of `patterns` (None for a rule without text) and the needle scan; bit i of a mask is branch
    i, branches in rule order."""

    def __init__(self, patterns: Sequence[str | None]) -> None:
        self.branches = tuple(
            Branch(rule, text, needles_)
            for rule, pattern in enumerate(patterns)
            if pattern is not None
            for text, needles_ in _split(pattern)
        )
        self.rule_bits = [0] * len(patterns)  # each rule's branches
        by_needle: dict[str, int] = {}  # needle -> the branches that have it
        self._always = 0  # branches without needles
        for bit, branch in enumerate(self.branches):
            self.rule_bits[branch.rule] |= 1 << bit
            for needle in branch.needles:
                by_needle[needle] = by_needle.get(needle, 0) | 1 << bit
            if not branch.needles:
                self._always |= 1 << bit
        # A match of the scan is the longest needle starting there: the needles inside it are present too.
        self._sure = {n: _or(by_needle.get(piece, 0) for piece in _pieces(n)) for n in by_needle}
        # Two scans: needles of ASCII characters only, and the others (German, French, Russian, Japanese, Chinese
        # words), which cannot occur in an ASCII text: most replies are ASCII and skip the second scan, so each
        # word of another script costs nothing there (the engine tries a trie's first characters one after the
        # other at every position). Each scan's restarts are computed over its own needles.
        narrow = sorted(n for n in by_needle if n.isascii())
        wide = sorted(n for n in by_needle if not n.isascii())
        self._skip = _restarts(narrow) | _restarts(wide)
        self._scan: Callable[..., re.Match[str] | None] | None = re.compile(_trie(narrow)).search if narrow else None
        self._scan_wide: Callable[..., re.Match[str] | None] | None = re.compile(_trie(wide)).search if wide else None

    def present(self, text: str) -> int:
        """The branches that may match `text`: those with a needle in it, and those without needles."""
        found = self._always
        for scan in (self._scan, None if text.isascii() else self._scan_wide):
            match = scan(text) if scan else None
            while match:
                needle = match[0]
                found |= self._sure[needle]
                match = scan(text, match.start() + self._skip[needle])  # type: ignore[misc]
        return found

    def first(self, text: str, mask: int) -> int | None:
        """The first rule, in pattern order, with a branch in `mask` that matches `text`."""
        bits = self.present(text) & mask
        while bits:
            low = bits & -bits
            branch = self.branches[low.bit_length() - 1]
            if branch.text.search(text):
                return branch.rule
            bits ^= low
        return None


@lru_cache(maxsize=64)
def text_index(patterns: tuple[str | None, ...]) -> TextIndex:
    """One index per rule set: every classifier loaded from the same files shares it."""
    return TextIndex(patterns)


@lru_cache(maxsize=1024)
def _split(pattern: str) -> tuple[tuple[re.Pattern[str], tuple[str, ...]], ...]:
    """A pattern's branches, compiled, with their needles: the packaged patterns are read once per process."""
    return tuple((re.compile(alternative), needles(alternative)) for alternative in alternatives(pattern))


def _or(masks: Iterable[int]) -> int:
    result = 0
    for mask in masks:
        result |= mask
    return result


def _pieces(text: str) -> Iterable[str]:
    return (text[i:k] for i in range(len(text)) for k in range(i + _MIN_NEEDLE, len(text) + 1))


def _restarts(needles_: Iterable[str]) -> dict[str, int]:
    """Per needle, how far past its start the scan resumes: the first offset at which a needle could begin inside
    it and end beyond it (a suffix of it that starts a longer needle); its length when none can. Needles that lie
    inside it are known present from it alone (`_sure`), and scanning on from there finds all the others."""
    found = set(needles_)
    starts = {n[:k] for n in found for k in range(1, len(n))}  # proper prefixes: a needle goes on past them

    def extends(needle: str, j: int) -> bool:
        return needle[j:] in starts

    return {n: next((j for j in range(1, len(n)) if extends(n, j)), len(n)) for n in found}


def _trie(words: Sequence[str]) -> str:
    """One regex matching, at any position, the longest of `words` that starts there: a trie whose optional tails
    are greedy, so Python's backtracking engine tries the longer word first."""
    root: dict[str, Any] = {}
    for word in words:
        node = root
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}
    return _trie_pattern(root)


def _trie_pattern(node: dict[str, Any]) -> str:
    """Children in the order of `_FREQUENT`: Python's regex engine tries alternatives one after the other at every
    position of the text, and at most one child can match the next character, so the order changes only the speed."""
    tails = [re.escape(char) + _trie_pattern(child) for char, child in sorted(node.items(), key=_frequency) if char]
    if not tails:
        return ""
    body = tails[0] if len(tails) == 1 else "(?:" + "|".join(tails) + ")"
    if "" in node:  # a word ends here: the longer ones are optional
        return f"(?:{body})?" if len(tails) == 1 else body + "?"
    return body


def _frequency(item: tuple[str, Any]) -> tuple[int, str]:
    position = _FREQUENT.find(item[0])
    return (position if position >= 0 else len(_FREQUENT), item[0])


# --- alternatives ---------------------------------------------------------------------------------------------


def alternatives(pattern: str) -> list[str]:
    """The top-level alternatives of `pattern`, a group around the whole of it removed, recursively: `(a|(b|c))`
    gives a, b, c; `(a|b)c` stays whole. A text matches the pattern exactly when it matches one of them."""
    if _UNSPLITTABLE.search(pattern):
        return [pattern]
    parts = _split_bars(_inside_group(pattern))
    if len(parts) == 1:
        return [pattern] if parts[0] == pattern else alternatives(parts[0])
    try:
        for part in parts:
            re.compile(part)
    except re.error:  # a construct this splitter does not know: keep the pattern whole
        return [pattern]
    return [alternative for part in parts for alternative in alternatives(part)]


def _tokens(pattern: str) -> Iterable[tuple[int, str]]:
    """(index, character) of the characters outside escapes and character classes: only these can be syntax."""
    i, in_class = 0, False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
            i += 1 + (pattern[i + 1 : i + 2] == "^")
            i += pattern[i : i + 1] == "]"  # a "]" right after "[" or "[^" is a literal
            continue
        else:
            yield i, char
        i += 1


def _inside_group(pattern: str) -> str:
    """The inside of a plain or non-capturing group that spans the whole pattern, else the pattern."""
    start = 3 if pattern.startswith("(?:") else 1 if pattern.startswith("(") and pattern[1:2] != "?" else 0
    if not start:
        return pattern
    depth = 0
    for i, char in _tokens(pattern):
        depth += (char == "(") - (char == ")")
        if depth == 0:
            return pattern[start:-1] if i == len(pattern) - 1 else pattern
    return pattern


def _split_bars(pattern: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, char in _tokens(pattern):
        depth += (char == "(") - (char == ")")
        if char == "|" and depth == 0:
            parts.append(pattern[start:i])
            start = i + 1
    return [*parts, pattern[start:]]


# --- needles --------------------------------------------------------------------------------------------------


def needles(pattern: str) -> tuple[str, ...]:
    """Literal strings of which every match of `pattern` contains one (empty when none can be told): a pattern's
    required literal run, or one per branch of a required alternation, the fewest and longest found."""
    try:
        found = _literals(_sre_parser.parse(pattern))
    except Exception:
        return ()
    # Spaces around a needle are dropped when enough is left: the space is a text's commonest character, so a needle
    # starting with one is found (and the scan restarted) at many more places; a part of a needle is still required.
    return tuple(sorted({_trimmed(n) for n in found})) if found else ()


def _trimmed(needle: str) -> str:
    inner = needle.strip(" ")
    return inner if len(inner) >= _MIN_NEEDLE else needle


def _literals(items: Any) -> set[str] | None:
    """Sets of literals, one of which any match of this sequence contains; the best of them, or None."""
    options: list[set[str]] = []
    run = ""
    for op, value in items:
        if op is _LITERAL:
            run += chr(value)
            continue
        options.append({run})
        run = ""
        option = _literals_in(op, value)
        if option:
            options.append(option)
    options.append({run})
    usable = [o for o in options if all(len(n) >= _MIN_NEEDLE for n in o)]
    return min(usable, key=lambda o: (len(o), -min(map(len, o)))) if usable else None


def _literals_in(op: Any, value: Any) -> set[str] | None:
    if op is _SUBPATTERN:
        return _literals(value[-1])
    if op is _BRANCH:
        branches = [_literals(branch) for branch in value[1]]
        return set().union(*branches) if all(branches) else None  # type: ignore[arg-type]
    if op in _REPEATS and value[0] >= 1:
        return _literals(value[2])
    return None
