"""/api/v1 routes of the conversations, included by config/urls.py. Ids are matched as any path segment so
that a malformed one answers the API's JSON 404, like an unknown one."""

from __future__ import annotations

from django.urls import path

from conversations.api import views

urlpatterns = [
    path("conversations", views.ConversationListCreateApi.as_view(), name="api_conversations"),
    path("conversations/<str:conversation_id>", views.ConversationDetailApi.as_view(), name="api_conversation"),
    path("conversations/<str:conversation_id>/messages", views.MessageSendApi.as_view(), name="api_message_send"),
    path("messages/<str:message_id>/regenerate", views.MessageRegenerateApi.as_view(), name="api_message_regenerate"),
    path("messages/<str:message_id>/continue", views.MessageContinueApi.as_view(), name="api_message_continue"),
    path("messages/<str:message_id>/edit", views.MessageEditApi.as_view(), name="api_message_edit"),
    path(
        "messages/<str:message_id>/switch-branch",
        views.MessageSwitchBranchApi.as_view(),
        name="api_message_switch_branch",
    ),
    path("generations/<str:generation_id>/cancel", views.GenerationCancelApi.as_view(), name="api_generation_cancel"),
    path("generations/<str:generation_id>/events", views.GenerationEventsApi.as_view(), name="api_generation_events"),
    path("usage", views.UsageApi.as_view(), name="api_usage"),
]
