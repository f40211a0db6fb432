"""Credentials out of URIs before anyone sees them.

A backend URI may carry a secret: a password in its userinfo (`http://user:KEY@host/v1`), a token
given as the user name (`https://TOKEN@host/v1`), or a key in its query (`?api_key=KEY`).
`redact_uri` masks each, in a bare URI or in any text that quotes one (an error message, a backend
name), so every URI that is printed, recorded or raised goes through this one function.
"""

from __future__ import annotations

import re

MASK = "***"

# query parameters that carry a secret, matched case-insensitively
SECRET_PARAMS = ("api_key", "api-key", "apikey", "key", "token", "access_token", "password")

# the userinfo runs to the last "@" of the authority: a raw "@" in a password is common
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<info>[^/?#\s]*)@")
_QUERY = re.compile(
    r"(?P<head>[?&;](?:" + "|".join(re.escape(p) for p in SECRET_PARAMS) + r")=)[^&;#\s'\"]*",
    re.IGNORECASE,
)


def _userinfo(m: re.Match[str]) -> str:
    user, sep, _ = m["info"].partition(":")
    # a user name alone is kept only beside a password: alone, it is usually a token
    return f"{m['scheme']}{user}:{MASK}@" if sep else f"{m['scheme']}{MASK}@"


def redact_uri(text: str) -> str:
    """`text` with the password of every `scheme://user:password@` (the whole userinfo when it
    has no password) and the value of every secret query parameter (`api_key=`, `key=`,
    `token=`, ...) replaced by `***`."""
    return _QUERY.sub(lambda m: m["head"] + MASK, _USERINFO.sub(_userinfo, text))
