"""Helpers shared by tests and benchmark scripts (real local servers, fakes)."""
