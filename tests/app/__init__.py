"""The field app driven under Xvfb against a real server process (see tests/app/harness.py)."""
