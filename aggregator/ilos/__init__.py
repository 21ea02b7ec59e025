"""Talking to ilos: the HTTP client, parsing its answers in worker processes, each key's budget and breaker, duration lookups, and its upload webhook's body."""
