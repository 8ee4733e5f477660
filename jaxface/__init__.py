"""jaxface: 3D face reconstruction and generation from 2D images in JAX/Flax."""

__version__ = "0.1.0"
