"""hazards domain."""
