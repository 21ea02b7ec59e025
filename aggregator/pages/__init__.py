"""Rendered pages: kept once rendered, rendered once for concurrent requests, dated by when each first appeared."""
