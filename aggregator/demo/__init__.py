"""`ilos-aggregator demo`: the real service against a simulated ilos with sample catalogues."""
