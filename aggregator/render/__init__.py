"""Turning a page of results into bytes: Atom, RSS, JSON Feed, the HTML page and the OpenSearch description. Knows nothing of ilos."""
