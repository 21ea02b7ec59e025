"""Answering a query: every org's answer (cached, fetched or stale), merged and ranked, with thumbnails and suggestions."""
