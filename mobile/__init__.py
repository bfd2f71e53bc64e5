"""mobile package."""
