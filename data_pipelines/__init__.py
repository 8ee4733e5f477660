"""Turning raw or synthetic face data into jaxface records."""
