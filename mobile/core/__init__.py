"""mobile/core package."""
