"""Serve: a model artifact behind an OpenAI-compatible API."""
