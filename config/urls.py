from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from accounts.billing import views as billing_views
from config import api, health, i18n
from conversations import analytics
from conversations import views as chat_views

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics, name="metrics"),
    path("jsi18n/", i18n.javascript_catalog, name="javascript_catalog"),
    path("admin/analytics/", admin.site.admin_view(analytics.analytics), name="admin_analytics"),
    path("admin/", admin.site.urls),
    path("accounts/", include("accounts.urls")),
    path("billing/stripe/webhook", billing_views.stripe_webhook, name="stripe_webhook"),
    path("api/v1/", include("accounts.api.urls")),
    path("api/v1/", include("conversations.api.urls")),
    path("api/", include(api.urlpatterns)),
    path("v1/", include("conversations.openai_api.urls")),
    path("developers/", api.developers, name="developers"),
    path("", chat_views.home, name="home"),
    path("", include("conversations.urls")),
]

handler400 = "accounts.views.bad_request"
handler403 = "accounts.views.permission_denied"
handler404 = "accounts.views.page_not_found"
handler500 = "accounts.views.server_error"
