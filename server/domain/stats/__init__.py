"""Statistics and CSV export for the command centre."""
