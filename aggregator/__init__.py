"""ilos-aggregator: one OpenSearch endpoint over many ilos (VidGrid) organisations."""

__version__ = "0.1.0"
PRODUCT = "ilos-aggregator"
USER_AGENT = f"{PRODUCT}/{__version__} (+https://github.com/ilos-aggregator)"
