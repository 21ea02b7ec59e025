"""The HTTP service: the app, its handlers, callers and their limits, CORS, conditional GETs and the access log."""
