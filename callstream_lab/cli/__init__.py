"""The lab's command groups, registered with `callstream` through entry points (pyproject.toml)."""
