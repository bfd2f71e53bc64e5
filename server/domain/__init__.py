"""Domains: one small package each (controllers, services, guards)."""
