"""The event loop's own tools: cutting work into turns, single flights, watching the loop's lag. Imports only the root."""
