"""Inference on photos: face detection, reconstruction and generation."""
