"""Raw line metrics with radon's exact definitions, in linear time.

radon (``radon.raw.analyze``) strips every line, then for each line re-tokenizes a growing
buffer until the buffer tokenizes cleanly; on a statement spanning *n* lines that is *n*
tokenizations of up to *n* lines — quadratic (19 s for one 75 KB file here). The chunk radon
settles on always ends at the first line after which the tokenizer is back in its neutral
state (outside strings and brackets, no pending backslash). So we tokenize the stripped text
once, cut it into the same chunks from that one token stream, and apply radon's per-chunk
rules unchanged. Results are identical to radon's; a text the single pass cannot cut (a stray
error token, which radon itself turns into a SyntaxError or an endless scan) falls back to the
reference algorithm, bounded by the task time limit.
"""

from __future__ import annotations

import io
import tokenize
from dataclasses import asdict, dataclass
from typing import Any

COMMENT, OP, NL, NEWLINE, EM, STRING = (
    tokenize.COMMENT, tokenize.OP, tokenize.NL, tokenize.NEWLINE, tokenize.ENDMARKER, tokenize.STRING,
)
_OPEN, _CLOSE = set("([{"), set(")]}")


@dataclass(frozen=True)
class RawMetrics:
    """radon's ``Module`` namedtuple fields (``single_comments`` included)."""

    loc: int
    lloc: int
    sloc: int
    comments: int
    multi: int
    blank: int
    single_comments: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _logical(tokens: list[tuple[Any, ...]]) -> int:
    """radon.raw._logical: logical lines in one chunk (colon and ';' rules, quirks included)."""
    total = 0
    sub: list[tuple[Any, ...]] = []
    subs = [sub]
    for tok in tokens:
        if tok[0] == OP and tok[1] == ";":
            sub = []
            subs.append(sub)
        else:
            sub.append(tok)
    for part in subs:
        processed = [t for t in part if t[0] not in (COMMENT, NL, NEWLINE)]
        pos = -1
        for index in range(len(processed) - 1, -1, -1):
            if processed[index][0] == OP and processed[index][1] == ":":
                pos = index
                break
        if pos >= 0:
            total += 2 - (pos == len(processed) - 2)
        elif any(t[0] not in (NL, NEWLINE, EM) for t in processed):
            total += 1
    return total


def _single(kind: int, tokens: list[tuple[Any, ...]]) -> bool:
    return tokens[0][0] == kind and all(t[0] in (EM, NL, NEWLINE) for t in tokens[1:])


class _Counts:
    def __init__(self) -> None:
        self.lloc = self.comments = self.single = self.multi = self.blank = self.sloc = 0

    def chunk(self, tokens: list[tuple[Any, ...]], lines: list[str]) -> None:
        self.comments += sum(1 for t in tokens if t[0] == COMMENT)
        if _single(COMMENT, tokens):
            self.single += 1
        elif _single(STRING, tokens):
            if tokens[0][2][0] == tokens[0][3][0]:
                self.single += 1
            else:
                self.multi += sum(1 for line in lines if line)
                self.blank += sum(1 for line in lines if not line)
        else:
            for line in lines:
                if line:
                    self.sloc += 1
                else:
                    self.blank += 1
        self.lloc += _logical(tokens)

    def result(self) -> RawMetrics:
        loc = self.sloc + self.blank + self.multi + self.single
        return RawMetrics(loc, self.lloc, self.sloc, self.comments, self.multi, self.blank, self.single)


class _NeedsReference(Exception):
    pass


def analyze_raw(source: str) -> RawMetrics:
    """radon.raw.analyze(source), computed in one tokenizer pass."""
    lines = [line.strip() for line in source.splitlines()]
    try:
        return _linear(lines)
    except _NeedsReference:
        return _reference(lines)


def _linear(lines: list[str]) -> RawMetrics:
    text = "\n".join(lines)
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):
        raise _NeedsReference from None
    # Rows (1-based) after which the tokenizer is neutral: a NEWLINE/NL outside brackets.
    by_row: dict[int, list[tuple[Any, ...]]] = {}
    neutral: set[int] = set()
    depth = 0
    for tok in tokens:
        kind, string = tok[0], tok[1]
        if kind == tokenize.ERRORTOKEN:
            raise _NeedsReference
        if kind == EM or kind in (tokenize.INDENT, tokenize.DEDENT):
            continue
        if kind == OP:
            if string in _OPEN:
                depth += 1
            elif string in _CLOSE:
                depth = max(0, depth - 1)
        elif kind in (NEWLINE, NL) and depth == 0:
            neutral.add(tok[2][0])
        by_row.setdefault(tok[2][0], []).append(tok)
    counts = _Counts()
    total = len(lines)
    start = 1
    row = 1
    while start <= total:
        row = start
        while row < total and row not in neutral:
            row += 1
        chunk: list[tuple[Any, ...]] = []
        for r in range(start, row + 1):
            chunk.extend(by_row.get(r, ()))
        chunk.append((EM, "", (row + 1, 0), (row + 1, 0), ""))
        counts.chunk(chunk, lines[start - 1:row])
        start = row + 1
    return counts.result()


def _reference(lines: list[str]) -> RawMetrics:
    """radon's own algorithm (quadratic on long statements); only for odd inputs."""
    counts = _Counts()
    index = 0
    while index < len(lines):
        end = index
        while True:
            buffer = "\n".join(lines[index:end + 1])
            try:
                tokens = list(tokenize.generate_tokens(io.StringIO(buffer).readline))
            except tokenize.TokenError:
                tokens = None
            if tokens is not None and not any(t[0] == tokenize.ERRORTOKEN for t in tokens):
                break
            end += 1
            if end >= len(lines):
                raise SyntaxError(f"SyntaxError at line: {index + 1}")
        counts.chunk(tokens, lines[index:end + 1])
        index = end + 1
    return counts.result()
