"""jaxface's networks: pure Flax linen modules (init / apply).

    from jaxface.models import PRNet, ResNetDiscriminator, ...
"""

from jaxface.models.discriminators import LandmarkDiscriminator
from jaxface.models.discriminators import normalize_landmarks
from jaxface.models.discriminators import ResNetDiscriminator
from jaxface.models.facegen import FaceDiscriminator
from jaxface.models.facegen import FaceGenerator
from jaxface.models.facegen import FeatureEncoder
from jaxface.models.layers import ConvTranspose
from jaxface.models.layers import conv_transpose_subpixel
from jaxface.models.layers import SqueezeExcite
from jaxface.models.prnet import PRNet
from jaxface.models.progression import ProgressionRNN

__all__ = [
    'ConvTranspose', 'conv_transpose_subpixel', 'FaceDiscriminator',
    'FaceGenerator', 'FeatureEncoder', 'LandmarkDiscriminator',
    'normalize_landmarks', 'PRNet', 'ProgressionRNN', 'ResNetDiscriminator',
    'SqueezeExcite',
]
