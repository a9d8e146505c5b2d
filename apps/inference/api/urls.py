from django.urls import path

from apps.inference.api import (
    async_views,
    feedback_views,
    history_views,
    responses_views,
    system_views,
    usage_views,
    views,
)

urlpatterns = [
    path("chat/completions", views.chat_completions, name="chat-completions"),
    path("completions", views.completions, name="completions"),
    path("responses", responses_views.ResponsesView.as_view(), name="responses"),
    path("responses/<str:response_id>", responses_views.ResponseDetailView.as_view(), name="response-detail"),
    path("embeddings", views.embeddings, name="embeddings"),
    path("rerank", views.rerank, name="rerank"),
    path("models", views.ModelListView.as_view(), name="models"),
    path("models/<path:model_id>", views.ModelDetailView.as_view(), name="model-detail"),
    path("async/submit", async_views.SubmitView.as_view(), name="async-submit"),
    path("async/submit-batch", async_views.SubmitBatchView.as_view(), name="async-submit-batch"),
    path("async/status/<uuid:task_id>", async_views.StatusView.as_view(), name="async-status"),
    path("async/result/<uuid:task_id>", async_views.ResultView.as_view(), name="async-result"),
    path("async/cancel/<uuid:task_id>", async_views.CancelView.as_view(), name="async-cancel"),
    path("async/retry/<uuid:task_id>", async_views.RetryView.as_view(), name="async-retry"),
    path("async/batch-status/<uuid:batch_id>", async_views.BatchStatusView.as_view(), name="async-batch-status"),
    path("async/tasks", async_views.TaskListView.as_view(), name="async-tasks"),
    path("async/health", async_views.QueueHealthView.as_view(), name="async-health"),
    path("history", history_views.HistoryView.as_view(), name="history"),
    path("history/search", history_views.HistorySearchView.as_view(), name="history-search"),
    path("conversations/<uuid:conversation_id>", history_views.ConversationView.as_view(), name="conversation-detail"),
    path("feedback", feedback_views.FeedbackView.as_view(), name="feedback"),
    path("usage", usage_views.UsageView.as_view(), name="usage"),
    path("system/status", system_views.SystemStatusView.as_view(), name="system-status"),
]
