from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from accounts import views as account_views
from config import health

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics, name="metrics"),
    path("admin/", admin.site.urls),
    path("accounts/", include("accounts.urls")),
    path("", account_views.home, name="home"),
    path("", include("conversations.urls")),
]

handler404 = "accounts.views.page_not_found"
handler500 = "accounts.views.server_error"
