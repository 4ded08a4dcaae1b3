"""The `kefu` command line."""
