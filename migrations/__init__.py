"""The store's numbered SQL migrations (see orchestrator.store). Installed as ``orchestrator.migrations``
(pyproject.toml maps this top-level folder there), so an installed copy finds them as package data."""
