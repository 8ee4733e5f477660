"""The procedural morphable face model, UV position maps, rendering, features."""
