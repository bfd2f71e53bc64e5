"""Residents: warning subscriptions without an account, and their public page."""
