"""Converters of real face datasets into jaxface records (the synthetic
generator is jaxface.data.synthetic)."""
