"""The JavaScript translation catalog (Django's JavaScriptCatalog: ``gettext()``, ``ngettext()``,
``interpolate()`` and the locale's formats, for our scripts).

Its address names the language and a fingerprint of the compiled catalogs (``?l=de&v=…``), so what it
serves depends on its address alone: browsers keep it for a year and ask again only after a deploy that
changed a translation or when the user's language changes. The server keeps each answer in the cache, under a
key that names the version.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import cache
from pathlib import Path
from urllib.parse import urlencode

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import translation
from django.views.decorators.cache import cache_control, cache_page
from django.views.decorators.http import require_safe
from django.views.i18n import JavaScriptCatalog

ONE_YEAR_S = 365 * 24 * 60 * 60
# Our apps keep no catalogs of their own (every translation is in LOCALE_PATHS, which is always read): naming
# them leaves out the admin's strings, which the admin's pages get from a catalog of their own.
PACKAGES = ["accounts", "conversations"]


@cache
def catalog_version() -> str:
    """A fingerprint of the JavaScript catalogs in LOCALE_PATHS: it changes when a translation does."""
    digest = hashlib.sha256()
    for directory in map(Path, settings.LOCALE_PATHS):
        for path in sorted(directory.glob("*/LC_MESSAGES/djangojs.mo")):
            digest.update(str(path.relative_to(directory)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def javascript_catalog_url() -> str:
    """The catalog's address for the active language."""
    query = urlencode({"l": translation.get_language(), "v": catalog_version()})
    return f"{reverse('javascript_catalog')}?{query}"


@cache
def _catalog_view() -> Callable[[HttpRequest], HttpResponse]:
    # Built on first use, once the catalogs are on disk (the key prefix names their version). cache_page also
    # sets the response's max-age (to its timeout: Django keeps the smaller of two), hence a year here too.
    view = JavaScriptCatalog.as_view(packages=PACKAGES)
    return cache_page(ONE_YEAR_S, key_prefix=f"jsi18n-{catalog_version()}")(view)


@require_safe
@cache_control(public=True, immutable=True)
def javascript_catalog(request: HttpRequest) -> HttpResponse:
    """The catalog of the language named by ``l`` (one of settings.LANGUAGES; otherwise the request's)."""
    language = request.GET.get("l", "")
    if language not in dict(settings.LANGUAGES):
        language = translation.get_language()
    with translation.override(language):
        response = _catalog_view()(request)
    response["Content-Language"] = language  # LocaleMiddleware would name the request's language
    return response
