"""sendtrack: exact per-message statuses and per-delivery KPIs from email delivery event streams."""

__version__ = "0.1.0"
