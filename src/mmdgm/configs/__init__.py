"""Built-in run configurations (YAML)."""
