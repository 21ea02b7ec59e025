"""Running the service: one process or N under gunicorn, the connection guard and logging."""
