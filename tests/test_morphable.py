"""Both face models implement `morphable.MorphableModel` alike."""

import numpy as np
import pytest

import fabricate
from jaxface.face import bfm as bfm_lib
from jaxface.face import model as model_lib
from jaxface.face import morphable

R = 33


@pytest.fixture(scope='module', params=['procedural', 'bfm'])
def face_model(request, tmp_path_factory):
  if request.param == 'procedural':
    return model_lib.build_face_model()
  directory = str(tmp_path_factory.mktemp('bfm'))
  fabricate.write_bfm(directory)
  return bfm_lib.load_bfm(directory)


def test_both_models_are_morphable_models(face_model):
  assert isinstance(face_model, morphable.MorphableModel)


def _through_the_interface(m: morphable.MorphableModel):
  """Uses `m` only as the protocol says; returns what it made."""
  shape = np.zeros(m.num_shape, np.float32)
  shape[0] = 1.0
  expression = np.zeros(m.num_expression, np.float32)
  vertices = m.vertices(shape, expression)
  return {'vertices': vertices, 'landmarks': m.landmarks(vertices),
          'extra': m.extra_points(vertices),
          'map': m.position_map(vertices, R),
          'canonical': m.canonical_position_map(vertices, R),
          'mean': m.vertices(np.zeros_like(shape), expression)}


def test_the_interface_gives_the_documented_shapes(face_model):
  out = _through_the_interface(face_model)
  n = face_model.num_vertices
  assert out['vertices'].shape == (n, 3)
  assert out['landmarks'].shape == (68, 3)
  assert out['extra'].shape == (5, 3)
  assert out['map'].shape == (R, R, 3) == out['canonical'].shape
  assert face_model.landmark_uv.shape == (68, 2)
  assert face_model.extra_uv.shape == (5, 2)
  # The first shape component moves the face; coefficients reach vertices.
  assert not np.allclose(out['vertices'], out['mean'])
  # Canonical maps: z's minimum over the covered face is 0.
  covered = face_model.uv_raster(R).covered
  assert np.isclose(out['canonical'][covered][:, 2].min(), 0.0, atol=1e-4)
