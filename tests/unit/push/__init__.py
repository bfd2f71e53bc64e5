"""Unit tests for push/."""
