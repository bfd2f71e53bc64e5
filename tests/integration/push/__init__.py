"""Integration tests for push/: real SDKs against loopback peers."""
