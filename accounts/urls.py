from __future__ import annotations

from django.urls import path

from accounts import views
from accounts.billing import views as billing_views

app_name = "accounts"

urlpatterns = [
    path("signup/", views.sign_up, name="signup"),
    path("login/", views.log_in, name="login"),
    path("logout/", views.log_out, name="logout"),
    path("verification/", views.verification_required, name="verification_required"),
    path("verification/resend/", views.verification_resend, name="verification_resend"),
    path("verify/<str:token>/", views.verify_email, name="verify_email"),
    path("settings/", views.settings_profile, name="settings_profile"),
    path("settings/email/", views.settings_email, name="settings_email"),
    path("settings/password/", views.settings_password, name="settings_password"),
    path("settings/api-keys/", views.settings_api_keys, name="settings_api_keys"),
    path("settings/api-keys/<int:api_key_id>/revoke/", views.settings_api_key_revoke, name="settings_api_key_revoke"),
    path("settings/billing/", billing_views.settings_billing, name="settings_billing"),
    path("settings/billing/checkout/", billing_views.billing_checkout, name="billing_checkout"),
    path("settings/billing/portal/", billing_views.billing_portal, name="billing_portal"),
    path("settings/delete/", views.settings_delete, name="settings_delete"),
    path("email/confirm/<str:token>/", views.email_change_confirm, name="email_change_confirm"),
    path("password/reset/", views.password_reset, name="password_reset"),
    path("password/reset/sent/", views.password_reset_done, name="password_reset_done"),
    path("password/reset/<uidb64>/<token>/", views.password_reset_confirm, name="password_reset_confirm"),
    path("password/reset/complete/", views.password_reset_complete, name="password_reset_complete"),
]
