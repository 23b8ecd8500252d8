"""jinja2 templates of the exit-server user-data and their renderer."""
