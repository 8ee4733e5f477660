"""TFDS support: jaxface records as a TFDS dataset, and TFDS's the300w_lp.

Everything here runs without TensorFlow (the assertions that TensorFlow
stays unimported are skipped where it is installed).
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import inspect
import json
import os
import pickle
import sys
import types

from etils import epath
import numpy as np
import pytest
import scipy.io
import tensorflow_datasets as tfds

from data_pipelines import tfds_300wlp
from data_pipelines import tfds_jaxface
from jaxface.data import records
from jaxface.data import shards
from jaxface.data import synthetic

HAS_TF = importlib.util.find_spec("tensorflow") is not None

CONFIG = synthetic.SynthConfig(resolution=32, identities=(("train", 5),
                                                          ("test", 3)),
                               clip_length=4)
COUNTS = {"recon": {"train": 6, "test": 2}, "multiview": {"train": 2,
                                                          "test": 1},
          "clips": {"train": 2, "test": 1}}


@pytest.fixture(scope="module")
def source_dir(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("tfds_synth") / "data")
  synthetic.synthesize(out, CONFIG, COUNTS, shard_size=4, progress=False)
  return out


@pytest.fixture(scope="module")
def tfds_dir(source_dir, tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("tfds_data"))
  for kind in COUNTS:
    tfds_jaxface.prepare(source_dir, kind, data_dir)
  return data_dir


def _assert_field_equal(kind, name, got, want):
  where = f"{kind} field {name}"
  if isinstance(want, np.ndarray):
    assert isinstance(got, np.ndarray), where
    assert got.dtype == want.dtype and got.shape == want.shape, (
        where, got.dtype, got.shape, want.dtype, want.shape)
    np.testing.assert_array_equal(got, want, err_msg=where)
  elif isinstance(want, bytes):  # A JPEG: the very bytes.
    assert isinstance(got, bytes) and got == want, where
  elif isinstance(want, list):  # JPEG list.
    assert [bytes(item) for item in got] == want, where
  elif isinstance(want, str):
    assert got == want.encode("utf-8"), where  # tfds Text: utf-8 bytes.
  else:
    assert isinstance(want, int) and int(got) == want, where


@pytest.mark.parametrize("kind", list(COUNTS))
def test_prepared_dataset_reads_back_every_field(source_dir, tfds_dir, kind):
  info = shards.read_dataset_info(source_dir)
  builder = tfds.builder(f"jaxface_records/{kind}", data_dir=tfds_dir)
  assert builder.info.file_format.value == "array_record"
  assert {split: s.num_examples for split, s in builder.info.splits.items()
          } == {split: e["count"] for split, e in info["kinds"][kind].items()}
  for split in info["kinds"][kind]:
    source = tfds_jaxface.data_source(tfds_dir, kind, split)
    with shards.RecordReader(source_dir, kind, split) as reader:
      assert len(source) == len(reader) == info["kinds"][kind][split]["count"]
      for i in range(len(reader)):
        record, example = reader[i], source[i]
        record.pop("kind")
        assert set(example) == set(record), (kind, split, i)
        for name, want in record.items():
          _assert_field_equal(kind, name, example[name], want)
  if not HAS_TF:
    assert "tensorflow" not in sys.modules


def test_features_follow_the_record_schema(tfds_dir):
  features = tfds.builder("jaxface_records/recon",
                          data_dir=tfds_dir).info.features
  # Synthetic records are 3D and have their position maps.
  assert set(features) == set(records.field_names("recon", True)) | {
      "position_map", *records.RECON_3D_FIELDS}
  assert features["position_map"].shape == (32, 32, 3)
  assert features["position_map"].np_dtype == np.float32
  assert features["shape_coeffs"].shape == (40,)
  assert features["expression_coeffs"].shape == (10,)
  assert isinstance(features["image"], tfds.features.Image)
  clips = tfds.builder("jaxface_records/clips",
                       data_dir=tfds_dir).info.features
  assert clips["landmarks"].shape == (4, 68, 3)
  assert clips["identities"].np_dtype == np.int64


@pytest.mark.parametrize("kind", list(COUNTS))
def test_example_to_record_bytes_round_trips(source_dir, tfds_dir, kind):
  source = tfds_jaxface.data_source(tfds_dir, kind, "train")
  as_records = pickle.loads(pickle.dumps(
      tfds_jaxface.RecordBytesSource(source, kind)))
  with shards.RecordReader(source_dir, kind, "train") as reader:
    assert len(as_records) == len(reader)
    for i in range(len(reader)):
      data = tfds_jaxface.example_to_record_bytes(source[i], kind)
      assert data == reader.read_bytes(i) == as_records[i]
      assert records.deserialize(data, kind=kind)["source"].startswith(
          "synthetic")


def test_decoded_images_equal_the_decoded_jpegs(source_dir, tfds_dir):
  source = tfds_jaxface.data_source(tfds_dir, "multiview", "train",
                                    decode_images=True)
  with shards.RecordReader(source_dir, "multiview", "train") as reader:
    record, example = reader[0], source[0]
  for got, jpeg in zip(example["images"], record["images"], strict=True):
    np.testing.assert_array_equal(got, records.decode_jpeg(jpeg))
  # Decoded images are re-encoded (lossily) into a valid record.
  fields = records.deserialize(tfds_jaxface.example_to_record_bytes(
      example, "multiview", jpeg_quality=100), kind="multiview")
  for got, jpeg in zip(fields["images"], record["images"], strict=True):
    error = np.abs(records.decode_jpeg(got).astype(int)
                   - records.decode_jpeg(jpeg).astype(int))
    assert error.mean() < 3.0
  np.testing.assert_array_equal(fields["canonical_position_map"],
                                record["canonical_position_map"])


def test_standard_tfds_calls_read_the_prepared_dataset(source_dir, tfds_dir):
  ds = tfds.data_source("jaxface_records/clips", split="test",
                        data_dir=tfds_dir)
  with shards.RecordReader(source_dir, "clips", "test") as reader:
    assert len(ds) == len(reader) == 1
    decoded = ds[0]
    assert decoded["frames"][0].shape == (32, 32, 3)
    assert int(decoded["label"]) == reader[0]["label"]
  read_only = tfds.builder_from_directory(
      os.path.join(tfds_dir, "jaxface_records", "recon", "1.0.0"))
  assert len(read_only.as_data_source("train")) == 6


def test_data_source_on_a_jaxface_dir_prepares_and_detects_changes(
    source_dir, tmp_path):
  copy = tmp_path / "copy"
  copy.mkdir()
  info = shards.read_dataset_info(source_dir)
  for entry in info["kinds"]["recon"].values():
    for name in entry["shards"]:
      (copy / name).write_bytes((epath.Path(source_dir) / name).read_bytes())
  info["kinds"] = {"recon": info["kinds"]["recon"]}
  shards.write_dataset_info(copy, info)
  source = tfds_jaxface.data_source(copy, "recon", "test")
  assert len(source) == 2
  assert (copy / "tfds" / "jaxface_records" / "recon" / "1.0.0").is_dir()
  assert len(tfds_jaxface.data_source(copy, "recon", "test")) == 2  # Reused.
  # The source changes: the prepared copy is stale.
  info["kinds"]["recon"].pop("test")
  shards.write_dataset_info(copy, info)
  with pytest.raises(tfds_jaxface.StaleDatasetError, match="overwrite=True"):
    tfds_jaxface.data_source(copy, "recon", "train")
  builder = tfds_jaxface.prepare(copy, "recon", copy / "tfds", overwrite=True)
  assert list(builder.info.splits) == ["train"]
  assert len(tfds_jaxface.data_source(copy, "recon", "train")) == 6
  with pytest.raises(shards.DatasetError, match="neither a jaxface dataset"):
    tfds_jaxface.data_source(tmp_path / "nothing", "recon", "train")
  with pytest.raises(shards.DatasetError, match="no 'clips' records"):
    tfds_jaxface.prepare(copy, "clips", tmp_path / "t")


def _recon(rng, identity, **changes):
  fields = {
      "image": records.encode_jpeg(
          rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), 90),
      "position_map": rng.normal(size=(8, 8, 3)).astype(np.float32),
      "landmarks": rng.normal(size=(68, 3)).astype(np.float32),
      "pose": rng.normal(size=(7,)).astype(np.float32),
      "shape_coeffs": rng.normal(size=(199,)).astype(np.float32),
      "expression_coeffs": rng.normal(size=(29,)).astype(np.float32),
      "face_box": np.array([0, 0, 8, 8], np.float32),
      "crop_transform": np.eye(3, dtype=np.float32),
      "original_size": np.array([8, 8], np.int32),
      "identity": identity,
      "source": "test",
  }
  fields.update(changes)
  return {k: v for k, v in fields.items() if v is not None}


def _write_recon(directory, by_split):
  os.makedirs(directory, exist_ok=True)
  kinds = {}
  for split, fields in by_split.items():
    names = []
    if fields:
      names = [shards.shard_name("recon", split, 0, 1)]
      with shards.ShardWriter(os.path.join(directory, names[0])) as writer:
        for f in fields:
          writer.write(records.serialize("recon", f))
    kinds[split] = {"count": len(fields), "shards": names}
  shards.write_dataset_info(directory, {"source": "test", "seed": 0,
                                        "resolution": 8,
                                        "kinds": {"recon": kinds}})


def test_optional_fields_and_empty_splits(tmp_path):
  rng = np.random.default_rng(0)
  jpeg = records.encode_jpeg(np.zeros((16, 16, 3), np.uint8), 90)
  fields = [_recon(rng, 0, original_image=jpeg),
            _recon(rng, 1, position_map=None),  # No 3DMM ground truth.
            _recon(rng, 2)]
  _write_recon(tmp_path / "a", {"test": fields, "train": []})
  source = tfds_jaxface.data_source(tmp_path / "a", "recon", None)
  assert set(source) == {"test"}  # TFDS cannot hold an empty split.
  builder = tfds.builder("jaxface_records/recon",
                         data_dir=tmp_path / "a" / "tfds")
  assert builder.info.metadata["empty_splits"] == ["train"]
  assert builder.info.metadata["dims"] == {"H": 8, "W": 8, "S": 199, "E": 29}
  examples = [source["test"][i] for i in range(3)]
  assert examples[0]["original_image"] == jpeg
  assert examples[1]["position_map"] is None
  assert examples[2]["original_image"] is None
  with shards.RecordReader(tmp_path / "a", "recon", "test") as reader:
    for i, example in enumerate(examples):
      data = tfds_jaxface.example_to_record_bytes(example, "recon")
      assert data == reader.read_bytes(i)
  assert "position_map" not in records.deserialize(
      tfds_jaxface.example_to_record_bytes(examples[1], "recon"))
  # An optional field the first record lacks is not a feature: refused.
  _write_recon(tmp_path / "b", {"train": [fields[2], fields[0]]})
  with pytest.raises(records.RecordError,
                     match=r"record 1: .*\['original_image'\]"):
    tfds_jaxface.prepare(tmp_path / "b", "recon", tmp_path / "b_tfds")


def test_example_to_record_bytes_names_bad_examples():
  rng = np.random.default_rng(1)
  example = _recon(rng, 3)
  example["source"] = b"test"
  example["identity"] = np.int64(3)
  records.deserialize(tfds_jaxface.example_to_record_bytes(example, "recon"))
  del example["landmarks"]
  with pytest.raises(records.RecordError, match=r"example 7.*landmarks"):
    tfds_jaxface.example_to_record_bytes(example, "recon",
                                         where="example 7")


# --- TFDS's the300w_lp -----------------------------------------------------


def _stub_converter() -> types.ModuleType:
  """A stand-in for data_pipelines.the300wlp with its documented interface."""
  module = types.ModuleType("data_pipelines.the300wlp")

  @dataclasses.dataclass
  class Sample:
    name: str
    image: np.ndarray
    pose_para: np.ndarray
    shape_para: np.ndarray
    exp_para: np.ndarray
    pt2d: np.ndarray | None
    source: str

  def convert_sample(sample, bfm, resolution, rng=None):
    del rng  # No perturbation.
    if sample.pose_para[1] > 1.5:
      raise ValueError("yaw out of range")
    landmarks = np.zeros((68, 3), np.float32)
    landmarks[:, :2] = sample.pt2d * resolution / sample.image.shape[1]
    return {
        "image": records.encode_jpeg(
            np.ascontiguousarray(sample.image[:resolution, :resolution]), 90),
        "position_map": np.full((resolution, resolution, 3), bfm["value"],
                                np.float32),
        "landmarks": landmarks, "pose": sample.pose_para,
        "shape_coeffs": sample.shape_para,
        "expression_coeffs": sample.exp_para,
        "face_box": np.array([0, 0, 1, 1], np.float32),
        "crop_transform": np.eye(3, dtype=np.float32),
        "original_size": np.array(sample.image.shape[:2], np.int32),
        "identity": int(sample.name.rsplit("_", 1)[1]),
        "source": sample.source,
    }

  module.Sample = Sample
  module.convert_sample = convert_sample
  return module


@pytest.fixture
def converter(monkeypatch):
  """data_pipelines.the300wlp if it exists, the stub otherwise."""
  try:
    return importlib.import_module("data_pipelines.the300wlp")
  except ModuleNotFoundError as e:
    if e.name != "data_pipelines.the300wlp":
      raise
  stub = _stub_converter()
  monkeypatch.setitem(sys.modules, stub.__name__, stub)
  return stub


def _the300w_lp_example(rng, pose=None):
  """An example with the300w_lp's feature names, shapes and units."""
  pixels = rng.uniform(50, 400, (68, 2)).astype(np.float32)
  example = {name: rng.normal(size=shape).astype(np.float32)
             for name, (shape, _) in tfds_300wlp.FEATURES.items()
             if name != "image"}
  example["image"] = rng.integers(0, 256, (450, 450, 3), dtype=np.uint8)
  example["landmarks_origin"] = pixels / np.float32(450.0)
  if pose is not None:
    example["pose_params"] = np.asarray(pose, np.float32)
  return example


def test_feature_spec_matches_tfds(tmp_path):
  builder = tfds.builder("the300w_lp", data_dir=tmp_path)
  features = builder.info.features
  assert set(features) == set(tfds_300wlp.FEATURES)
  for name, (shape, dtype) in tfds_300wlp.FEATURES.items():
    assert features[name].shape == shape, name
    assert features[name].np_dtype == np.dtype(dtype), name
  assert features["image"].encoding_format == "jpeg"
  code = inspect.getsource(tfds.builder_cls("the300w_lp"))
  assert code.count("/ 450.0") == 3  # pt2d, pts_2d and pts_3d.


def test_example_to_sample_converts_units_and_keeps_pose_order(converter):
  rng = np.random.default_rng(0)
  example = _the300w_lp_example(rng, pose=[0.1, -0.5, 0.2, 100.0, 200.0, 0.0,
                                           0.0012])
  # Point 0 at pixel (90, 225) is stored as (90 / 450, 225 / 450).
  example["landmarks_origin"][0] = [0.2, 0.5]
  example["landmarks_origin"][67] = [1.0, 0.0]
  sample = tfds_300wlp.example_to_sample(example, 12)
  assert isinstance(sample, converter.Sample)
  face = tfds_300wlp.face_name(example["shape_params"])
  assert sample.name == face + "_12"
  assert sample.source == "tfds/the300w_lp/train/12"
  np.testing.assert_allclose(sample.pt2d[0], [90.0, 225.0], rtol=1e-6)
  np.testing.assert_allclose(sample.pt2d[67], [450.0, 0.0], rtol=1e-6)
  assert sample.pt2d.shape == (68, 2) and sample.pt2d.dtype == np.float32
  np.testing.assert_array_equal(
      sample.pose_para, np.float32([0.1, -0.5, 0.2, 100, 200, 0, 0.0012]))
  assert sample.shape_para.shape == (199,) and sample.exp_para.shape == (29,)
  assert sample.shape_para.dtype == sample.exp_para.dtype == np.float32
  np.testing.assert_array_equal(sample.shape_para, example["shape_params"])
  np.testing.assert_array_equal(sample.image, example["image"])
  # Undecoded (JPEG bytes) images are decoded; a missing feature is named.
  example["image"] = records.encode_jpeg(example["image"], 95)
  sample = tfds_300wlp.example_to_sample(example, 0)
  assert sample.image.shape == (450, 450, 3) and sample.image.dtype == np.uint8
  del example["exp_params"]
  with pytest.raises(ValueError, match="example 3: no 'exp_params'"):
    tfds_300wlp.example_to_sample(example, 3)
  example["exp_params"] = np.zeros(30, np.float32)
  with pytest.raises(ValueError, match="'exp_params' has shape"):
    tfds_300wlp.example_to_sample(example, 3)


def test_example_to_sample_on_tfds_mock_data(converter, tmp_path):
  with tfds.testing.mock_data(num_examples=2,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    source = tfds.data_source("the300w_lp", split="train",
                              data_dir=tmp_path)
    examples = [source[i] for i in range(len(source))]
  assert len(examples) == 2
  for i, example in enumerate(examples):
    sample = tfds_300wlp.example_to_sample(example, i)
    assert isinstance(sample, converter.Sample)
    assert sample.image.shape == (450, 450, 3)
    np.testing.assert_allclose(sample.pt2d,
                               example["landmarks_origin"] * 450.0)
    np.testing.assert_array_equal(sample.pose_para, example["pose_params"])


def test_iter_samples_without_tensorflow_says_how_to_install_it(tmp_path):
  if HAS_TF:
    pytest.skip("TensorFlow is installed")
  with pytest.raises(ImportError, match=r'pip install -e "\.\[tf\]"'):
    tfds_300wlp.iter_samples(data_dir=tmp_path)
  with pytest.raises(FileNotFoundError, match="not prepared"):
    tfds_300wlp.iter_samples(data_dir=tmp_path, download=False)
  assert "tensorflow" not in sys.modules


@pytest.fixture
def the300w_lp_copy(tmp_path, monkeypatch):
  """An array_record the300w_lp prepared without TensorFlow from fake data.

  The builder's own generator reads .mat files with TensorFlow; here
  `_split_generators` yields hand-made examples (images as JPEG bytes, which
  TFDS stores as they are) through TFDS's real features and writer.
  """
  rng = np.random.default_rng(3)
  poses = [[0.1 * i, 0.2 * i, 0.0, 1.0, 2.0, 3.0, 0.001] for i in range(4)]
  poses[2][1] = 2.0  # The stub converter refuses this one.
  examples = []
  for pose in poses:
    example = _the300w_lp_example(rng, pose)
    example["image"] = records.encode_jpeg(example["image"], 90)
    examples.append(example)
  builder_cls = tfds.builder_cls("the300w_lp")
  monkeypatch.setattr(
      builder_cls, "_split_generators",
      lambda self, dl_manager: {"train": iter(
          (f"image_{i}.jpg", e) for i, e in enumerate(examples))})
  # TFDS 4.9.10's code_path imports the undeclared importlib_resources
  # (tensorflow/datasets#11212). (Not monkeypatch.setattr: it reads the old
  # value through the failing class property.)
  assert "code_path" not in builder_cls.__dict__
  builder_cls.code_path = epath.Path(inspect.getfile(builder_cls))
  try:
    data_dir = tmp_path / "tfds"
    builder = tfds.builder("the300w_lp", data_dir=data_dir,
                           file_format="array_record")
    builder.download_and_prepare()
  finally:
    del builder_cls.code_path
  return data_dir, examples


def test_iter_samples_and_convert_read_an_array_record_copy(
    the300w_lp_copy, converter, tmp_path, monkeypatch):
  data_dir, examples = the300w_lp_copy
  by_pose = {tuple(e["pose_params"]): e for e in examples}
  samples = list(tfds_300wlp.iter_samples(data_dir=data_dir))
  assert len(samples) == len(examples)
  assert [s.source for s in samples] == [f"tfds/the300w_lp/train/{i}"
                                         for i in range(4)]
  for sample in samples:
    example = by_pose[tuple(sample.pose_para)]  # TFDS shuffles examples.
    np.testing.assert_allclose(sample.pt2d,
                               example["landmarks_origin"] * 450.0)
    np.testing.assert_array_equal(sample.image,
                                  records.decode_jpeg(example["image"]))

  stub = _stub_converter()
  monkeypatch.setitem(sys.modules, stub.__name__, stub)
  out = tmp_path / "out"
  loaded = []

  def load_bfm(bfm_dir):
    loaded.append(bfm_dir)
    return {"value": 7.0}

  info = tfds_300wlp.convert(data_dir, "/bfm", out, resolution=16,
                             progress=False, download=False,
                             bfm_loader=load_bfm)
  assert loaded and set(loaded) == {os.path.abspath("/bfm")}
  assert info == shards.read_dataset_info(out)
  assert info["source"] == "300W_LP" and info["resolution"] == 16
  assert info["kinds"]["recon"]["train"]["count"] == 3
  refused = [i for i, s in enumerate(samples) if s.pose_para[1] > 1.5]
  assert info["skipped"] == {"recon": {"train": 1}}
  assert [s["item"] for s in info["skipped_samples"]] == [
      f"tfds/the300w_lp/train/{i}" for i in refused]
  assert "yaw out of range" in info["skipped_samples"][0]["reason"]
  assert info["tfds"]["name"] == "the300w_lp"
  kept = [s for s in samples if s.pose_para[1] <= 1.5]
  with shards.RecordReader(out, "recon", "train") as reader:
    for sample, record in zip(kept, reader, strict=True):
      np.testing.assert_array_equal(record["pose"], sample.pose_para)
      np.testing.assert_array_equal(record["expression_coeffs"],
                                    sample.exp_para)
      assert record["position_map"][0, 0, 0] == 7.0  # The loaded BFM.
      assert record["source"] == sample.source
  # Deterministic: the same bytes again.
  again = tmp_path / "again"
  tfds_300wlp.convert(data_dir, "/bfm", again, resolution=16,
                      progress=False, download=False, bfm_loader=load_bfm)
  name = info["kinds"]["recon"]["train"]["shards"][0]
  assert (out / name).read_bytes() == (again / name).read_bytes()
  with pytest.raises(FileExistsError):
    tfds_300wlp.convert(data_dir, "/bfm", out, resolution=16,
                        progress=False, download=False, bfm_loader=load_bfm)
  json.dumps(info)


def _tfds_the300w_lp_examples(root):
  """TFDS's the300w_lp `_generate_examples`, with numpy in place of tf.io.

  Same file pattern, .mat variables, reshapes and / 450 as
  tensorflow_datasets/datasets/the300w_lp/the300w_lp_dataset_builder.py
  (4.9.10); the image is passed as its path, as there.
  """
  image_files = glob.glob(os.path.join(root, "[!Code]*[!_Flip]/[!_]*.jpg"))
  for image_file in image_files:
    mat = scipy.io.loadmat(image_file.replace("jpg", "mat"))
    landmarks = scipy.io.loadmat(
        image_file.replace("300W_LP", "300W_LP/landmarks").replace(
            ".jpg", "_pts.mat"))
    yield os.path.basename(image_file), {
        "image": image_file,
        "landmarks_origin": (mat["pt2d"].T / 450.0).astype(np.float32),
        "landmarks_2d": (landmarks["pts_2d"] / 450.0).astype(np.float32),
        "landmarks_3d": (landmarks["pts_3d"] / 450.0).astype(np.float32),
        "roi": mat["roi"].reshape(4).astype(np.float32),
        "illum_params": mat["Illum_Para"].reshape([-1]).astype(np.float32),
        "color_params": mat["Color_Para"].reshape([-1]).astype(np.float32),
        "tex_params": mat["Tex_Para"].reshape([-1]).astype(np.float32),
        "shape_params": mat["Shape_Para"].reshape([-1]).astype(np.float32),
        "exp_params": mat["Exp_Para"].reshape([-1]).astype(np.float32),
        "pose_params": mat["Pose_Para"].reshape([-1]).astype(np.float32),
    }


def test_tfds_path_matches_the_file_converter(tmp_path, monkeypatch):
  """Fake 300W-LP files -> TFDS the300w_lp -> convert == the file converter."""
  fabricate = pytest.importorskip("fabricate")
  the300wlp = pytest.importorskip("data_pipelines.the300wlp")
  bfm_lib = pytest.importorskip("jaxface.face.bfm")
  bfm_dir, root = str(tmp_path / "bfm"), str(tmp_path / "300W_LP")
  fabricate.write_bfm(bfm_dir)
  written = [w for w in fabricate.write_300wlp(root, bfm_dir)
             if not w["folder"].endswith("_Flip")]
  builder_cls = tfds.builder_cls("the300w_lp")
  monkeypatch.setattr(
      builder_cls, "_split_generators",
      lambda self, dl_manager: {"train": _tfds_the300w_lp_examples(root)})
  assert "code_path" not in builder_cls.__dict__  # See the300w_lp_copy.
  builder_cls.code_path = epath.Path(inspect.getfile(builder_cls))
  try:
    data_dir = tmp_path / "tfds"
    tfds.builder("the300w_lp", data_dir=data_dir,
                 file_format="array_record").download_and_prepare()
  finally:
    del builder_cls.code_path

  samples = list(tfds_300wlp.iter_samples(data_dir, download=False))
  assert len(samples) == len(written)
  by_pose = {tuple(w["pose"]): w for w in written}
  files = [by_pose[tuple(s.pose_para)] for s in samples]
  for sample, w in zip(samples, files):
    truth = the300wlp.read_sample(w["mat"])
    np.testing.assert_allclose(sample.pt2d, truth.pt2d, atol=1e-3)
    np.testing.assert_array_equal(sample.image, truth.image)
    np.testing.assert_array_equal(sample.shape_para, truth.shape_para)
    np.testing.assert_array_equal(sample.exp_para, truth.exp_para)
  # Views of one face share an identity; different faces do not.
  ids = {}
  for sample, w in zip(samples, files):
    ids.setdefault(the300wlp.face_key(w["name"]), set()).add(
        the300wlp.identity_of(sample.name))
  assert all(len(v) == 1 for v in ids.values())
  assert len(set.union(*ids.values())) == len(ids) > 1

  out = tmp_path / "out"
  info = tfds_300wlp.convert(data_dir, bfm_dir, out, resolution=32,
                             progress=False, download=False)
  assert info["kinds"]["recon"]["train"]["count"] == len(written)
  bfm = bfm_lib.load_bfm(bfm_dir)
  with shards.RecordReader(out, "recon", "train") as reader:
    for record, sample, w in zip(reader, samples, files, strict=True):
      want = the300wlp.convert_sample(the300wlp.read_sample(w["mat"]), bfm, 32)
      assert record["identity"] == the300wlp.identity_of(sample.name)
      assert record["source"] == sample.source
      for name in set(want) - {"identity", "source"}:
        _assert_field_equal("recon", name, record[name], want[name])
