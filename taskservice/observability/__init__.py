"""Metrics that no single role's loop records: database samples and multiprocess bookkeeping."""
