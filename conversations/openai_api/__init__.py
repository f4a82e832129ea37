"""The OpenAI-compatible API under /v1: the official ``openai`` SDK works unchanged with base_url=<host>/v1.

``views`` (async Django views: authenticate, validate, call conversations.completions, render),
``validation`` (a chat.completions request body -> CompletionRequest), ``responses`` (chat.completion
objects, chunks, model objects), ``streaming`` (reading the generation streams of a request's choices),
``errors`` (OpenAI's error JSON).
"""
