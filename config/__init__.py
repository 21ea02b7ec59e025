"""The example and demo configurations, shipped as package data (aggregator.configs)."""
