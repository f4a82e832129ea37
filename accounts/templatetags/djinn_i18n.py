"""Template helpers for translated pages.

``{% javascript_catalog_url %}``: base.html loads the JavaScript translation catalog with it (a tag rather than a
context processor: the 400 and 500 pages are rendered without a request context).
``{{ moment|ago }}``: "3 days ago", "vor 3 Tagen".
"""

from __future__ import annotations

from datetime import datetime

from django import template
from django.contrib.humanize.templatetags.humanize import NaturalTimeFormatter
from django.utils.timesince import timesince
from django.utils.translation import gettext as _

from config.i18n import javascript_catalog_url as _catalog_url

register = template.Library()


@register.simple_tag
def javascript_catalog_url() -> str:
    return _catalog_url()


@register.filter
def ago(moment: datetime) -> str:
    """How long ago ``moment`` was, in the active language. Humanize's past-tense words give German its dative
    ("vor 3 Tagen", where ``timesince`` says "3 Tage"); unlike ``naturaltime`` it never says "now"."""
    return _("%(delta)s ago") % {"delta": timesince(moment, time_strings=NaturalTimeFormatter.past_substrings)}
