"""Evaluation of trained models: metrics, plots and reconstruction reports."""
