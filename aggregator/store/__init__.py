"""Shared state: the cache (Redis, or in-process memory when Redis is absent or down) and the moving-window limiter."""
