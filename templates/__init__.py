"""The search page's Jinja2 templates and stylesheet, shipped as package data (aggregator.templates)."""
