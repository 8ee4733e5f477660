"""Tests of jaxface.eval.inception: Inception Score, Frechet distance and the
identity classifier they use."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from jaxface.data import shards
from jaxface.data import synthetic
from jaxface.eval import inception

RES = 32
NUM_IDS = 8


# ------------------------------------------------------------ Inception Score


@pytest.mark.parametrize('k', [2, 5, 8])
def test_inception_score_of_confident_uniform_classifier_is_k(k):
  # Ten splits of k consecutive rows, each predicting every class once.
  probs = np.eye(k)[np.tile(np.arange(k), 10)]
  mean, std = inception.inception_score(probs, splits=10)
  assert mean == pytest.approx(k, rel=1e-9)
  assert std == pytest.approx(0, abs=1e-9)


@pytest.mark.parametrize('row', [[0.2, 0.5, 0.3], [0.0, 1.0, 0.0]])
def test_inception_score_of_constant_classifier_is_one(row):
  probs = np.tile(np.asarray(row), (40, 1))
  mean, std = inception.inception_score(probs, splits=10)
  assert mean == pytest.approx(1.0, abs=1e-9)
  assert std == pytest.approx(0, abs=1e-9)


def test_inception_score_matches_hand_computation():
  # One split of two samples: p(y|x) = (1, 0) and (1/2, 1/2); p(y) =
  # (3/4, 1/4). KL_1 = log(4/3); KL_2 = (log(2/3) + log 2) / 2.
  probs = np.array([[1.0, 0.0], [0.5, 0.5]])
  expected = np.exp((np.log(4 / 3) + 0.5 * np.log(2 / 3) + 0.5 * np.log(2))
                    / 2)
  mean, std = inception.inception_score(probs, splits=1)
  assert mean == pytest.approx(expected, rel=1e-12)
  assert std == 0


def test_inception_score_std_is_zero_for_identical_splits():
  block = np.random.default_rng(0).dirichlet(np.ones(6) * 0.3, size=12)
  mean, std = inception.inception_score(np.tile(block, (10, 1)), splits=10)
  assert mean > 1.5
  assert std == pytest.approx(0, abs=1e-9)


def test_inception_score_std_over_different_splits():
  # Split 1 is confident over 2 classes (score 2), split 2 constant (1).
  probs = np.array([[1, 0], [0, 1], [1, 0], [1, 0]], np.float64)
  mean, std = inception.inception_score(probs, splits=2)
  assert mean == pytest.approx(1.5)
  assert std == pytest.approx(0.5)


def test_inception_score_rejects_bad_input():
  with pytest.raises(ValueError, match='at least one sample per split'):
    inception.inception_score(np.full((5, 3), 1 / 3), splits=10)
  with pytest.raises(ValueError, match='finite and non-negative'):
    inception.inception_score(np.array([[np.nan, 1.0]] * 10), splits=10)
  with pytest.raises(ValueError, match='finite and non-negative'):
    inception.inception_score(np.array([[-0.5, 1.5]] * 10), splits=10)
  with pytest.raises(ValueError, match=r'\(N, K\)'):
    inception.inception_score(np.ones(10), splits=10)


# --------------------------------------------------------- Frechet distance


def _exact_gaussian_samples(mean, cov, count, seed):
  """Samples whose sample mean and (unbiased) covariance are exactly mean
  and cov."""
  x = np.random.default_rng(seed).standard_normal((count, len(mean)))
  x -= x.mean(0)
  x = x @ np.linalg.inv(np.linalg.cholesky(np.cov(x, rowvar=False))).T
  return x @ np.linalg.cholesky(cov).T + mean


def test_frechet_distance_of_a_set_with_itself_is_zero():
  features = np.random.default_rng(1).standard_normal((300, 16)) * 3 + 2
  assert inception.frechet_distance(features, features) == pytest.approx(
      0, abs=1e-6)


def test_frechet_distance_of_diagonal_gaussians_matches_closed_form():
  var_a, var_b = np.array([1.0, 4.0, 0.25, 9.0]), np.array([4, 1, 1, 2.0])
  mu_a, mu_b = np.array([0.0, 1, 2, 3]), np.array([1.0, -1, 2, 0.5])
  a = _exact_gaussian_samples(mu_a, np.diag(var_a), 500, 2)
  b = _exact_gaussian_samples(mu_b, np.diag(var_b), 400, 3)
  expected = (np.sum((mu_a - mu_b)**2)
              + np.sum((np.sqrt(var_a) - np.sqrt(var_b))**2))
  assert inception.frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_of_scaled_full_covariances():
  # S_b = c S_a: Tr(S_a + c S_a - 2 sqrt(c) S_a) = (1 - sqrt c)^2 Tr(S_a).
  m = np.random.default_rng(4).standard_normal((5, 5))
  cov = m @ m.T + np.eye(5)
  a = _exact_gaussian_samples(np.zeros(5), cov, 300, 5)
  b = _exact_gaussian_samples(np.ones(5), 4 * cov, 300, 6)
  expected = 5 + (1 - 2)**2 * np.trace(cov)
  assert inception.frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_with_singular_covariances():
  rng = np.random.default_rng(7)
  a = rng.standard_normal((6, 32))  # rank 5 covariances in 32 dimensions
  b = rng.standard_normal((6, 32)) + 1.0
  same = inception.frechet_distance(a, a)
  other = inception.frechet_distance(a, b)
  assert np.isfinite(same) and np.isfinite(other)
  assert abs(same) < 1e-3
  assert other > 32 * 0.5  # the mean shift alone contributes 32.


def test_frechet_distance_rejects_bad_input():
  good = np.zeros((10, 4)) + np.arange(10)[:, None]
  bad = good.copy()
  bad[3, 2] = np.inf
  with pytest.raises(ValueError, match='non-finite'):
    inception.frechet_distance(good, bad)
  with pytest.raises(ValueError, match='non-finite'):
    inception.frechet_distance(np.where(bad == np.inf, np.nan, bad), good)
  with pytest.raises(ValueError, match='dimensions differ'):
    inception.frechet_distance(good, good[:, :3])
  with pytest.raises(ValueError, match='at least 2 samples'):
    inception.frechet_distance(good[:1], good)


# -------------------------------------------------------------- classifier


@pytest.fixture(scope='module')
def trained():
  """(bundle, held-out LabelledMaps) of 8 synthetic identities at 32x32."""
  train = inception.identity_training_set(NUM_IDS, 16, RES, seed=0)
  held_out = inception.identity_training_set(NUM_IDS, 8, RES, seed=0,
                                             first_sample=16)
  bundle = inception.train_identity_classifier(
      train.maps, train.labels, train.num_classes, steps=150,
      identities=train.identities, source=train.source,
      validation=(held_out.maps, held_out.labels))
  return bundle, held_out


def test_identity_training_set_layout():
  data = inception.identity_training_set(3, 4, RES, seed=0, first_identity=5)
  assert data.maps.shape == (12, RES, RES, 3) and data.maps.dtype == np.float32
  np.testing.assert_array_equal(data.labels, np.repeat(np.arange(3), 4))
  np.testing.assert_array_equal(data.identities, [5, 6, 7])
  assert data.source == 'synthetic identities'
  # Canonical frame: x, y within the map, z >= 0 starting at 0.
  assert data.maps.min() > -0.1 * RES and data.maps.max() < 1.1 * RES
  np.testing.assert_allclose(data.maps[..., 2].min(axis=(1, 2)), 0, atol=1e-5)
  again = inception.identity_training_set(3, 4, RES, seed=0, first_identity=5)
  np.testing.assert_array_equal(data.maps, again.maps)
  other = inception.identity_training_set(3, 4, RES, seed=0, first_identity=5,
                                          first_sample=4)
  assert not np.allclose(data.maps, other.maps)


def test_classifier_generalises_to_new_faces_of_the_identities(trained):
  bundle, held_out = trained
  probs, feats = inception.classify(bundle, held_out.maps)
  assert probs.shape == (len(held_out.labels), NUM_IDS)
  assert feats.shape == (len(held_out.labels), bundle.features)
  np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
  accuracy = np.mean(probs.argmax(1) == held_out.labels)
  assert accuracy >= 0.9  # chance is 1/8
  # Trained, not only lucky: an untrained network is far less confident.
  assert probs.max(1).mean() > 0.9
  assert bundle.val_accuracy == pytest.approx(accuracy)
  assert bundle.train_accuracy >= 0.8
  assert bundle.identities == tuple(range(NUM_IDS))
  assert bundle.name == ('jaxface identity classifier: 8 synthetic '
                         'identities, 32x32 canonical position maps')


def test_scores_separate_diverse_from_collapsed_faces(trained):
  bundle, held_out = trained
  # 8 identities x 8 faces, interleaved: each split holds every identity.
  diverse = held_out.maps.reshape(NUM_IDS, 8, RES, RES, 3).swapaxes(0, 1)
  diverse = diverse.reshape(-1, RES, RES, 3)
  collapsed = held_out.maps[held_out.labels == 3]  # one identity
  collapsed = np.concatenate([collapsed] * 8)
  scores = inception.generation_scores(bundle, diverse, held_out.maps,
                                       splits=4)
  assert scores['inception_score'] > 5
  assert scores['frechet_distance'] == pytest.approx(0, abs=1e-3)
  assert scores['classifier'] == bundle.name
  collapsed_scores = inception.generation_scores(bundle, collapsed,
                                                 held_out.maps, splits=4)
  assert collapsed_scores['inception_score'] < 1.5
  assert collapsed_scores['frechet_distance'] > 1.0


def test_classify_pads_the_last_batch(trained):
  bundle, held_out = trained
  maps = held_out.maps[:13]
  probs, feats = inception.classify(bundle, maps, batch_size=5)
  probs_one, feats_one = inception.classify(bundle, maps, batch_size=64)
  assert probs.shape == (13, NUM_IDS)
  np.testing.assert_allclose(probs, probs_one, atol=1e-5)
  np.testing.assert_allclose(feats, feats_one, atol=1e-4)
  with pytest.raises(ValueError, match='takes 32x32 maps'):
    inception.classify(bundle, np.zeros((2, 16, 16, 3), np.float32))


def test_save_load_round_trip(trained, tmp_path):
  bundle, held_out = trained
  inception.save_classifier(bundle, str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == ['classifier.json', 'params.npz']
  loaded = inception.load_classifier(str(tmp_path))
  for key in ('name', 'num_classes', 'resolution', 'identities',
              'train_accuracy', 'val_accuracy', 'width', 'features'):
    assert getattr(loaded, key) == getattr(bundle, key), key
  np.testing.assert_array_equal(inception.classify(loaded, held_out.maps)[0],
                                inception.classify(bundle, held_out.maps)[0])


def test_load_reports_missing_and_corrupt_files(trained, tmp_path):
  bundle, _ = trained
  with pytest.raises(FileNotFoundError, match='classifier.json is missing'):
    inception.load_classifier(str(tmp_path))
  inception.save_classifier(bundle, str(tmp_path))
  params = tmp_path / 'params.npz'
  good = params.read_bytes()
  params.write_bytes(good[:len(good) // 2])
  with pytest.raises(ValueError, match='corrupt identity classifier '
                     'parameters'):
    inception.load_classifier(str(tmp_path))
  params.write_bytes(good)
  meta = tmp_path / 'classifier.json'
  text = meta.read_text()
  meta.write_text(text[:len(text) // 2])
  with pytest.raises(ValueError, match='corrupt identity classifier metadata'):
    inception.load_classifier(str(tmp_path))
  wrong = json.loads(text)
  wrong['num_classes'] = NUM_IDS + 1
  meta.write_text(json.dumps(wrong))
  with pytest.raises(ValueError, match='do not fit the network'):
    inception.load_classifier(str(tmp_path))
  os.remove(params)
  with pytest.raises(FileNotFoundError, match='params.npz is missing'):
    inception.load_classifier(str(tmp_path))


def test_training_rejects_bad_labels():
  maps = np.zeros((4, RES, RES, 3), np.float32)
  with pytest.raises(ValueError, match=r'labels must be in \[0, 2\)'):
    inception.train_identity_classifier(maps, np.array([0, 1, 2, 0]), 2)
  with pytest.raises(ValueError, match='non-finite'):
    inception.train_identity_classifier(maps * np.nan, np.zeros(4, int), 2)


# ------------------------------------------------------------ dataset maps


def test_dataset_training_set_reads_multiview_identities(tmp_path):
  seed = 3
  directory = str(tmp_path / 'data')
  synthetic.synthesize(
      directory,
      synthetic.SynthConfig(resolution=RES, seed=seed,
                            identities=(('train', 4), ('test', 2))),
      {'multiview': {'train': 6}}, progress=False)
  data = inception.dataset_training_set(directory, 'train', batch_size=4)
  reader = shards.RecordReader(directory, 'multiview', 'train')
  records = [reader[i] for i in range(len(reader))]
  ids = np.array([r['identity'] for r in records])
  np.testing.assert_array_equal(data.identities, np.unique(ids))
  np.testing.assert_array_equal(data.identities[data.labels], ids)
  np.testing.assert_array_equal(
      data.maps, np.stack([r['canonical_position_map'] for r in records]))
  assert data.source == 'synthetic identities'
  # The classes of identity_training_set with the dataset's seed are the
  # dataset's identities: each record's face is nearest to its own
  # identity's neutral face.
  neutral = inception.identity_training_set(4, 1, RES, seed=seed,
                                            p_expression=0.0)
  for record in records:
    error = np.abs(neutral.maps - record['canonical_position_map']).mean(
        axis=(1, 2, 3))
    assert neutral.identities[np.argmin(error)] == record['identity']


def test_frechet_distance_falls_back_to_an_offset_when_the_root_fails(
    monkeypatch):
  rng = np.random.default_rng(8)
  a, b = rng.standard_normal((50, 6)), rng.standard_normal((40, 6)) + 0.5
  exact = inception.frechet_distance(a, b)
  sqrtm = inception.scipy.linalg.sqrtm
  calls = []

  def failing_once(matrix):
    calls.append(matrix)
    return np.full_like(matrix, np.nan) if len(calls) == 1 else sqrtm(matrix)

  monkeypatch.setattr(inception.scipy.linalg, 'sqrtm', failing_once)
  assert inception.frechet_distance(a, b) == pytest.approx(exact, rel=1e-4)
  assert len(calls) == 2
  # The retry adds eps to the covariances' diagonals.
  np.testing.assert_allclose(
      calls[1], (np.cov(a, rowvar=False) + 1e-6 * np.eye(6))
      @ (np.cov(b, rowvar=False) + 1e-6 * np.eye(6)), rtol=1e-12)

  monkeypatch.setattr(inception.scipy.linalg, 'sqrtm',
                      lambda m: sqrtm(m) + 0.5j * np.eye(len(m)))
  with pytest.raises(ValueError, match='imaginary part'):
    inception.frechet_distance(a, b)
