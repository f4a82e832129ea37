from __future__ import annotations

from django.urls import path

from conversations import views

app_name = "conversations"

urlpatterns = [
    path("c/<uuid:conversation_id>/", views.conversation_detail, name="detail"),
    path("p/<uuid:project_id>/", views.project_detail, name="project"),
    path("p/<uuid:project_id>/edit/", views.project_edit, name="project_edit"),
    path("p/<uuid:project_id>/delete/", views.project_delete, name="project_delete"),
    path("projects/new/", views.project_new, name="project_new"),
    path("documents/", views.document_upload, name="document_upload"),
    path("documents/<uuid:document_id>/remove/", views.document_remove, name="document_remove"),
    path("s/<str:token>/", views.shared, name="shared"),
    path("settings/shared-links/", views.settings_shared_links, name="settings_shared_links"),
    path("settings/export/", views.settings_export, name="settings_export"),
    path("settings/export/<int:export_id>/download/", views.export_download, name="export_download"),
]
