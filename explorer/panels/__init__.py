"""The explorer's panels, one module each (explorer.handlers re-exports their handlers)."""
