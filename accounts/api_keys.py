"""The API key format, and the form that names a new key.

A key reads ``djn_<8 characters>_<40 characters>``. ``djn_`` lets secret scanners recognise a leaked
key; ``djn_<8 characters>`` is its prefix, a public id stored in clear (shown in lists, searched in
the admin, used to find the row); the whole key is stored only as its SHA-256. Both random parts
come from ``secrets`` over [A-Za-z0-9], so the secret part alone holds about 238 bits: a fast hash is
enough, since nobody can guess through that many values whatever the hash costs.
"""

from __future__ import annotations

import hashlib
import secrets
import string
from dataclasses import dataclass

from django import forms
from django.utils.translation import gettext_lazy as _

SCHEME = "djn"
PREFIX_RANDOM_LENGTH = 8
SECRET_LENGTH = 40
PREFIX_LENGTH = len(SCHEME) + 1 + PREFIX_RANDOM_LENGTH  # "djn_" + 8
KEY_LENGTH = PREFIX_LENGTH + 1 + SECRET_LENGTH
NAME_MAX_LENGTH = 100
# last_used_at is written at most once per this many seconds per key, however many requests it makes.
LAST_USED_INTERVAL_S = 60

_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True)
class NewKey:
    key: str  # the whole key: shown once, never stored
    prefix: str
    key_hash: str


def key_generate() -> NewKey:
    prefix = f"{SCHEME}_{_random(PREFIX_RANDOM_LENGTH)}"
    key = f"{prefix}_{_random(SECRET_LENGTH)}"
    return NewKey(key=key, prefix=prefix, key_hash=key_hash(key))


def key_hash(key: str) -> str:
    """Hex SHA-256 of the whole key."""
    return hashlib.sha256(key.encode()).hexdigest()


def key_prefix(key: str) -> str | None:
    """The prefix of a well-formed key, or None when ``key`` cannot be one of ours (checked before any query)."""
    scheme, _, rest = key.partition("_")
    random_part, _, secret = rest.partition("_")
    well_formed = (
        scheme == SCHEME
        and len(random_part) == PREFIX_RANDOM_LENGTH
        and len(secret) == SECRET_LENGTH
        and all(char in _ALPHABET for char in random_part + secret)
    )
    return f"{SCHEME}_{random_part}" if well_formed else None


def _random(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(
        label=_("Name"),
        required=False,
        max_length=NAME_MAX_LENGTH,
        help_text=_("Something to recognise it by later, like the app or machine that uses it."),
        widget=forms.TextInput(attrs={"autocomplete": "off", "placeholder": _("e.g. laptop script")}),
    )
