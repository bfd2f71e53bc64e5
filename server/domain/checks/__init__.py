"""Safety self-check templates and submissions."""
