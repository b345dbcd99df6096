"""Entity tag schemes: the one tag splitter, scheme detection, and exact IOB1 <-> IOB2 conversion.

- IOB2 (BIO): every entity starts with B-X, continues with I-X.
- IOB1 (the original CoNLL-2003 files): an entity starts with I-X; B-X only where the previous
  token belongs to another X entity (B-X or I-X), to separate the two.
- BIOES (IOBES): B-X, I-X, E-X for entities of two or more tokens, S-X for one token.

A tag is `O`, a prefix `B-`/`I-`/`E-`/`S-` and a type (`split_tag`), or anything else (no
prefix, e.g. `PER` or `<pad>`: conlleval reads it as I-PER, the CRF constraints leave it free).

The tagger trains on IOB2 when its training file is IOB1 (the CRF constraints need to know where
an entity starts: at B-X), and converts its predictions back (`internal_scheme`, `convert_all`).
Both conversions keep the entity spans exactly as conlleval reads them, for any sequence of B/I/O
tags; on valid IOB1 (IOB2) input, IOB1 -> IOB2 -> IOB1 (IOB2 -> IOB1 -> IOB2) is the identity.
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence

IOB1, IOB2, BIOES = "IOB1", "IOB2", "BIOES"
SCHEMES = (IOB1, IOB2, BIOES)
OUTSIDE = "O"
PREFIXES = "BIES"


def split_tag(tag: str) -> tuple[Optional[str], str]:
    """(prefix, type) of a tag: 'B-PER' -> ('B', 'PER') (also I-, E-, S-; the type may hold
    hyphens), 'O' -> ('O', ''), anything else -> (None, tag)."""
    if tag == OUTSIDE:
        return OUTSIDE, ""
    if len(tag) > 2 and tag[1] == "-" and tag[0] in PREFIXES:
        return tag[0], tag[2:]
    return None, tag


def _continues(prev: Optional[str], type_: str) -> bool:
    """Does the token tagged `prev` (None at the sentence start) hold an entity of `type_` that
    the next token may continue? True for B-X, I-X and a prefix-less X (conlleval: I-X)."""
    if prev is None:
        return False
    prefix, prev_type = split_tag(prev)
    return prefix in ("B", "I", None) and prev_type == type_


def _entity_starts(tags: Sequence[str]) -> Iterable[tuple[int, str, bool]]:
    """(position, prefix, after_same_type) of every B-X and of every I-X that starts an entity
    (not after an X token it could continue)."""
    prev: Optional[str] = None
    for i, tag in enumerate(tags):
        prefix, type_ = split_tag(tag)
        after = _continues(prev, type_)
        if prefix == "B" or (prefix == "I" and not after):
            yield i, prefix, after
        prev = tag


def label_scheme(labels: Iterable[str]) -> str:
    """The scheme of a tag set: BIOES if any tag is E-X or S-X, else IOB2. (A tag set cannot
    tell IOB1 from IOB2; `detect_scheme` reads the sequences.)"""
    return BIOES if any(split_tag(t)[0] in ("E", "S") for t in labels) else IOB2


def detect_scheme(tag_seqs: Iterable[Sequence[str]]) -> Optional[str]:
    """The scheme of tagged sentences: BIOES if any tag is E-X or S-X; else IOB1 if entities start
    with I-X (at the sentence start, after O or after another type) more often than with a B-X
    that does not follow an X token (all of them do in IOB1, none in IOB2); else IOB2. None when
    nothing tells (no E-/S- tag and no entity start), e.g. all tags O.

    Counting both, rather than calling any I-X start IOB1, keeps an IOB2 file with a few stray
    `O I-X` errors IOB2 (its predictions are then written in IOB2)."""
    seqs = [list(s) for s in tag_seqs]
    if label_scheme(t for s in seqs for t in s) == BIOES:
        return BIOES
    i_starts = b_starts = 0
    for tags in seqs:
        for _, prefix, after in _entity_starts(tags):
            if prefix == "I":
                i_starts += 1
            elif not after:
                b_starts += 1
    if not i_starts and not b_starts:
        return None
    return IOB1 if i_starts > b_starts else IOB2


def iob1_to_iob2(tags: Sequence[str]) -> list[str]:
    """One sentence's tags in IOB2: an I-X that starts an entity (not after B-X/I-X) becomes B-X;
    every other tag is kept. Spans are unchanged; valid IOB2 input comes back unchanged."""
    out = list(tags)
    for i, prefix, _ in _entity_starts(tags):
        if prefix == "I":
            out[i] = "B-" + split_tag(tags[i])[1]
    return out


def iob2_to_iob1(tags: Sequence[str]) -> list[str]:
    """One sentence's tags in IOB1: a B-X stays B-X only right after a token of an X entity (B-X
    or I-X), else becomes I-X; every other tag is kept. Spans are unchanged; valid IOB1 input
    comes back unchanged."""
    out = list(tags)
    for i, prefix, after in _entity_starts(tags):
        if prefix == "B" and not after:
            out[i] = "I-" + split_tag(tags[i])[1]
    return out


def convert(tags: Sequence[str], source: Optional[str], target: Optional[str]) -> list[str]:
    """One sentence's tags from scheme `source` to `target` (IOB1 <-> IOB2; the same scheme, or
    None on either side, leaves them as they are)."""
    if source is None or target is None or source == target:
        return list(tags)
    if (source, target) == (IOB1, IOB2):
        return iob1_to_iob2(tags)
    if (source, target) == (IOB2, IOB1):
        return iob2_to_iob1(tags)
    raise ValueError(f"cannot convert tags from {source} to {target} (only IOB1 <-> IOB2)")


def convert_all(tag_seqs: Iterable[Sequence[str]], source: Optional[str], target: Optional[str]) -> list[list[str]]:
    """`convert` for every sentence (always per sentence: a sentence start is an entity start)."""
    return [convert(tags, source, target) for tags in tag_seqs]


def convertible(source: Optional[str], target: Optional[str]) -> bool:
    """Can `convert` take tags from `source` to `target` (both IOB1 or IOB2)?"""
    return source in (IOB1, IOB2) and target in (IOB1, IOB2)


def internal_scheme(scheme: Optional[str]) -> Optional[str]:
    """The scheme the tagger trains on for data in `scheme`: IOB2 for IOB1, else the same."""
    return IOB2 if scheme == IOB1 else scheme
