"""Operator endpoints under /v1/admin; every router here is mounted behind an operator role."""
