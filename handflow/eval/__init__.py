"""Metrics, benchmark protocols, submission files and the scorer CLI."""
