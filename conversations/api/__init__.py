"""REST front doors of the conversations: Djinn's own /api/v1 (views, serializers, urls) and the
OpenAI-compatible /v1 (openai*)."""
