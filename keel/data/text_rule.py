"""The one rule of a usable text: what ingest quarantines, what validation counts and what
scoring refuses (each in its own words), so that the three never disagree.

A value is a usable text when it is a string that is not empty or whitespace only, holds no
bytes that were not UTF-8 (a reader decodes with ``surrogateescape``, so each such byte is a
lone surrogate here), no mojibake (UTF-8 decoded as Latin-1 or Windows-1252, as ftfy judges
it) and no control characters other than tab, newline and carriage return, and is at most
`max_characters` long. Scoring does not apply the length bound: it truncates to the model's
tokens and flags the row instead, and it repairs mojibake (ftfy) and flags that too: a
daily scoring job gets a prediction for a message with a Windows-1252 apostrophe, while a
training set quarantines it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
from ftfy.badness import is_bad

# Check -> the rule in words (the expectation's rule and the quarantine's reason).
TEXT_CHECKS = {
    "text_missing": "every row needs a text (the value is missing)",
    "text_non_string": "the text must be a string (a number, list or object is not a text)",
    "text_empty": "the text must not be empty or whitespace only",
    "text_bad_utf8": "the text must be valid UTF-8 (the file holds bytes that are not)",
    "text_mojibake": "the text must not be mojibake (UTF-8 read as Latin-1, e.g. 'Ã©' for 'é'); re-export the file as UTF-8",
    "text_control": "the text must not hold control characters (other than tab and newline)",
    "text_too_long": "the text is longer than the dataset's text.max_characters",
}
# What makes a row unscorable (scoring's errors file says these; length only truncates and
# mojibake is repaired, both noted).
SCORING_CHECKS = ("text_missing", "text_non_string", "text_empty", "text_bad_utf8", "text_control")

_SURROGATE = re.compile("[\udc80-\udcff]")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA or value is pd.NaT


def text_problems(values: Sequence, max_characters: int | None = None) -> pd.DataFrame:
    """One row per value: a bool column per check of TEXT_CHECKS (True: the value breaks it;
    a missing value breaks text_missing alone) and `characters` (the length; 0 when not a
    string). Without `max_characters`, text_too_long is never set."""
    n = len(values)
    flags = {check: np.zeros(n, dtype=bool) for check in TEXT_CHECKS}
    characters = np.zeros(n, dtype=np.int64)
    for i, value in enumerate(values):
        if _is_missing(value):
            flags["text_missing"][i] = True
            continue
        if not isinstance(value, str):
            flags["text_non_string"][i] = True
            continue
        characters[i] = len(value)
        if not value.strip():
            flags["text_empty"][i] = True
            continue
        if _SURROGATE.search(value):
            flags["text_bad_utf8"][i] = True
        elif is_bad(value):
            flags["text_mojibake"][i] = True
        if _CONTROL.search(value):
            flags["text_control"][i] = True
        if max_characters is not None and len(value) > max_characters:
            flags["text_too_long"][i] = True
    frame = pd.DataFrame(flags)
    frame["characters"] = characters
    return frame


def first_problem(row: pd.Series, checks: Sequence[str] = tuple(TEXT_CHECKS)) -> str | None:
    """The first check of `checks` that a row of text_problems breaks, or None."""
    for check in checks:
        if bool(row[check]):
            return check
    return None


def usable(problems: pd.DataFrame, checks: Sequence[str] = tuple(TEXT_CHECKS)) -> np.ndarray:
    """One bool per row of text_problems: True where the row breaks none of `checks`."""
    return ~problems[list(checks)].to_numpy().any(axis=1) if len(problems) else np.zeros(0, dtype=bool)


def printable(value, limit: int = 200) -> str:
    """A value as reports show it: cut to `limit` characters, undecodable bytes and control
    characters escaped, so a report never carries them."""
    if _is_missing(value):
        return ""
    text = value if isinstance(value, str) else repr(value)
    text = text[:limit] + ("…" if len(text) > limit else "")
    text = _SURROGATE.sub(lambda m: f"\\x{ord(m.group()) - 0xDC00:02x}", text)
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
