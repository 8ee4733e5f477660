"""Tests of jaxface.data.records: schema, serialisation, validation, JPEG."""

from __future__ import annotations

from flax import serialization
import numpy as np
import pytest

from jaxface.data import records

H, W, S, E, T = 8, 8, 40, 10, 4


def _jpeg(rng, size=(H, W)):
  return records.encode_jpeg(
      rng.integers(0, 256, (*size, 3), dtype=np.uint8), 90)


def _f32(rng, *shape):
  return rng.normal(size=shape).astype(np.float32)


def make_recon(rng, s=S, e=E):
  return {
      "image": _jpeg(rng),
      "position_map": _f32(rng, H, W, 3),
      "landmarks": _f32(rng, 68, 3),
      "pose": _f32(rng, 7),
      "shape_coeffs": _f32(rng, s),
      "expression_coeffs": _f32(rng, e),
      "face_box": np.array([10, 20, 110, 140], np.float32),
      "crop_transform": np.array([[2, 0, -20], [0, 2, -40], [0, 0, 1]],
                                 np.float32),
      "original_size": np.array([480, 640], np.int32),
      "identity": 7,
      "source": "synthetic",
  }


def make_multiview(rng):
  transforms = np.tile(np.eye(3, dtype=np.float32), (3, 1, 1))
  transforms[:, :2, 2] = _f32(rng, 3, 2)
  return {
      "images": [_jpeg(rng) for _ in records.VIEWS],
      "landmarks": _f32(rng, 3, 68, 3),
      "extra_points": _f32(rng, 3, 5, 3),
      "poses": _f32(rng, 3, 7),
      "crop_transforms": transforms,
      "canonical_position_map": _f32(rng, H, W, 3),
      "shape_coeffs": _f32(rng, 199),
      "expression_coeffs": _f32(rng, 29),
      "identity": 3,
      "source": "bfm",
  }


def make_clips(rng, t=T):
  return {
      "frames": [_jpeg(rng) for _ in range(t)],
      "landmarks": _f32(rng, t, 68, 3),
      "poses": _f32(rng, t, 7),
      "identities": np.full((t,), 5, np.int64),
      "label": 0,
      "corruption": records.CORRUPTIONS.index("shuffled"),
      "source": "synthetic",
  }


MAKERS = {"recon": make_recon, "multiview": make_multiview,
          "clips": make_clips}


@pytest.fixture
def rng():
  return np.random.default_rng(0)


def _assert_same(a, b):
  assert set(a) == set(b)
  for name, value in a.items():
    if isinstance(value, np.ndarray):
      assert isinstance(b[name], np.ndarray), name
      assert b[name].dtype == value.dtype, name
      np.testing.assert_array_equal(b[name], value, err_msg=name)
    else:
      assert type(b[name]) is type(value), name
      assert b[name] == value, name


@pytest.mark.parametrize("kind", records.KINDS)
def test_round_trip(kind, rng):
  fields = MAKERS[kind](rng)
  restored = records.deserialize(records.serialize(kind, fields), kind=kind)
  assert restored.pop("kind") == kind
  _assert_same(fields, restored)


@pytest.mark.parametrize("kind", records.KINDS)
def test_deserialized_record_serializes_again(kind, rng):
  record = records.deserialize(records.serialize(kind, MAKERS[kind](rng)))
  data = records.serialize(record["kind"], record)
  assert records.deserialize(data, kind=kind)["kind"] == kind
  assert records.serialize(kind, record) == data


@pytest.mark.parametrize("kind", records.KINDS)
def test_bytes_are_flax_msgpack(kind, rng):
  # Records are written in flax.serialization's msgpack encoding (datasets
  # made before records.py packed them itself must stay readable, and
  # records made now must read where flax reads them).
  fields = MAKERS[kind](rng)
  data = records.serialize(kind, fields)
  expected = {"schema_version": records.SCHEMA_VERSION, "kind": kind,
              "fields": dict(fields)}
  assert data == serialization.msgpack_serialize(expected)
  # flax stores numpy scalars as their own extension type.
  integer = "identity" if "identity" in fields else "corruption"
  value = np.int64(fields[integer])
  expected["fields"][integer] = value
  restored = records.deserialize(serialization.msgpack_serialize(expected))
  assert restored.pop("kind") == kind
  assert type(restored[integer]) is np.int64 and restored[integer] == value
  fields[integer] = value
  _assert_same(fields, restored)


def test_serialize_refuses_unpackable_values(rng):
  fields = make_recon(rng)
  fields["source"] = ("synthetic",)  # validate names a type; the packer too
  with pytest.raises(records.RecordError):
    records.serialize("recon", fields)


def test_unknown_extension_type_is_corrupted():
  import msgpack  # pylint: disable=g-import-not-at-top
  data = msgpack.packb({"schema_version": records.SCHEMA_VERSION,
                        "kind": "recon", "fields": msgpack.ExtType(9, b"x")})
  with pytest.raises(records.RecordError, match="corrupted.*extension type 9"):
    records.deserialize(data)


def test_serialize_casts_to_schema_dtypes(rng):
  fields = make_recon(rng)
  fields["position_map"] = fields["position_map"].astype(np.float64)
  fields["pose"] = fields["pose"].tolist()
  fields["original_size"] = np.array([480, 640], np.int64)
  fields["identity"] = np.int64(7)
  restored = records.deserialize(records.serialize("recon", fields))
  assert restored["position_map"].dtype == np.float32
  np.testing.assert_allclose(restored["position_map"],
                             fields["position_map"], rtol=1e-6)
  assert restored["pose"].dtype == np.float32
  assert restored["original_size"].dtype == np.int32
  assert restored["original_size"].tolist() == [480, 640]
  assert restored["identity"] == 7 and isinstance(restored["identity"], int)


def test_serialize_does_not_truncate_floats_to_int(rng):
  fields = make_recon(rng)
  fields["original_size"] = np.array([480.5, 640.0])
  with pytest.raises(records.RecordError, match="original_size.*float64"):
    records.serialize("recon", fields)


def test_serialize_float64_overflow_is_non_finite(rng):
  fields = make_recon(rng)
  fields["pose"] = np.full(7, 1e300)
  with pytest.raises(records.RecordError, match="'pose'.*non-finite"):
    records.serialize("recon", fields)


def test_record_error_is_value_error():
  assert issubclass(records.RecordError, ValueError)


def _drop(name):
  def mutate(fields):
    del fields[name]
  return mutate


def _set(name, value):
  def mutate(fields):
    fields[name] = value(fields) if callable(value) else value
  return mutate


def _set_item(name, index, value):
  def mutate(fields):
    array = fields[name].copy()
    array[index] = value
    fields[name] = array
  return mutate


# (kind, mutation, field the message must name, other text it must contain)
INVALID = {
    "missing field": ("recon", _drop("pose"), "pose", "missing"),
    "unexpected field": ("recon", _set("colour", 1), "colour", "unexpected"),
    "wrong dtype": ("recon", _set("position_map", lambda f: f["position_map"]
                                  .astype(np.float64)),
                    "position_map", "float64"),
    "int dtype for float": ("multiview", _set("poses", np.zeros((3, 7),
                                                                np.int32)),
                            "poses", "int32"),
    "int32 identities": ("clips", _set("identities", np.zeros(T, np.int32)),
                         "identities", "int64"),
    "not an array": ("recon", _set("pose", [0.0] * 7), "pose", "list"),
    "wrong rank": ("recon", _set("landmarks", np.zeros((68 * 3,),
                                                       np.float32)),
                   "landmarks", "rank"),
    "wrong fixed dim": ("recon", _set("landmarks", np.zeros((67, 3),
                                                            np.float32)),
                        "landmarks", "(68, 3)"),
    "wrong view count": ("multiview", _set("extra_points",
                                           np.zeros((3, 4, 3), np.float32)),
                         "extra_points", "(3, 5, 3)"),
    "inconsistent T": ("clips", _set("poses", np.zeros((T + 1, 7),
                                                       np.float32)),
                       "poses", "T="),
    "inconsistent T frames": ("clips", _set("frames",
                                            lambda f: f["frames"][:-1]),
                              "frames", "T="),
    "empty dim": ("recon", _set("shape_coeffs", np.zeros((0,), np.float32)),
                  "shape_coeffs", "at least 1"),
    "nan": ("recon", _set_item("position_map", (1, 2, 0), np.nan),
            "position_map", "non-finite"),
    "inf": ("multiview", _set_item("landmarks", (2, 5, 1), np.inf),
            "landmarks", "(2, 5, 1)"),
    "bad jpeg": ("recon", _set("image", b"\x89PNG\r\n\x1a\n"), "image",
                 "SOI"),
    "jpeg str": ("recon", _set("image", "not bytes"), "image", "str"),
    "bad jpeg in list": ("clips", _set("frames", lambda f: f["frames"][:2] +
                                       [b"GIF89a"] + f["frames"][3:]),
                         "frames'[2]", "SOI"),
    "too few views": ("multiview", _set("images", lambda f: f["images"][:2]),
                      "images", "length 3"),
    "images not a list": ("multiview", _set("images", lambda f: f["images"][0]),
                          "images", "list"),
    "identity str": ("recon", _set("identity", "7"), "identity", "int"),
    "identity bool": ("multiview", _set("identity", True), "identity", "bool"),
    "source int": ("recon", _set("source", 3), "source", "str"),
    "label 1 with corruption": ("clips", _set("label", 1), "corruption",
                                "label 1"),
    "label 0 without corruption": ("clips", _set("corruption", 0),
                                   "corruption", "label 0"),
    "label 2": ("clips", _set("label", 2), "label", "0 or 1"),
    "corruption out of range": ("clips",
                                _set("corruption", len(records.CORRUPTIONS)),
                                "corruption", "index"),
    "bad homogeneous row": ("recon", _set_item("crop_transform", (2, 0), 0.5),
                            "crop_transform", "last row"),
    "negative size": ("recon", _set("original_size",
                                    np.array([0, 640], np.int32)),
                      "original_size", "positive"),
    "unordered box": ("recon", _set("face_box", np.array([5, 0, 1, 9],
                                                         np.float32)),
                      "face_box", "x_min <= x_max"),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_validate_rejects(case, rng):
  kind, mutate, field, text = INVALID[case]
  fields = MAKERS[kind](rng)
  records.validate(kind, fields)  # Sound before the mutation.
  mutate(fields)
  with pytest.raises(records.RecordError) as info:
    records.validate(kind, fields, where="shard-x record 17")
  message = str(info.value)
  assert message.startswith("shard-x record 17: ")
  assert field in message
  assert text in message


@pytest.mark.parametrize("case", [c for c in INVALID
                                  if c not in ("wrong dtype", "int32 identities",
                                               "int dtype for float",
                                               "not an array")])
def test_serialize_rejects(case, rng):
  kind, mutate, field, _ = INVALID[case]
  fields = MAKERS[kind](rng)
  mutate(fields)
  with pytest.raises(records.RecordError, match=field.replace("[", r"\[")):
    records.serialize(kind, fields)


def test_validate_reports_every_problem(rng):
  fields = make_recon(rng)
  fields["pose"] = fields["pose"][:6]
  fields["image"] = b"nope"
  del fields["source"]
  with pytest.raises(records.RecordError) as info:
    records.validate("recon", fields)
  for name in ("pose", "image", "source"):
    assert name in str(info.value)


def test_symbolic_dims_may_differ_between_records(rng):
  records.validate("recon", make_recon(rng, s=40, e=10))
  records.validate("recon", make_recon(rng, s=199, e=29))
  records.validate("clips", make_clips(rng, t=1))


def test_true_progression_is_valid(rng):
  fields = make_clips(rng)
  fields.update(label=1, corruption=0)
  records.validate("clips", fields)


def test_unknown_kind(rng):
  with pytest.raises(records.RecordError, match="unknown record kind 'mesh'"):
    records.serialize("mesh", make_recon(rng))
  with pytest.raises(records.RecordError, match="unknown record kind"):
    records.validate("mesh", {})


def test_fields_must_be_a_mapping():
  with pytest.raises(records.RecordError, match="mapping"):
    records.validate("recon", [1, 2])


@pytest.mark.parametrize("data", [b"garbage", b"", b"\xc1",
                                  serialization.msgpack_serialize([1, 2]),
                                  b"\x93\x01\x02\x03"])
def test_garbage_is_corrupted(data):
  with pytest.raises(records.RecordError, match="corrupted") as info:
    records.deserialize(data, where="recon-train shard 3 record 9")
  assert "recon-train shard 3 record 9" in str(info.value)


def test_schema_version_mismatch(rng):
  record = {"schema_version": 2, "kind": "recon", "fields": make_recon(rng)}
  with pytest.raises(records.RecordError) as info:
    records.deserialize(serialization.msgpack_serialize(record))
  message = str(info.value)
  assert "schema version 2" in message
  assert f"schema version {records.SCHEMA_VERSION}" in message
  assert "regenerate" in message


def test_missing_schema_version(rng):
  record = {"kind": "recon", "fields": make_recon(rng)}
  with pytest.raises(records.RecordError, match="no schema_version"):
    records.deserialize(serialization.msgpack_serialize(record))


def test_deserialize_wrong_kind(rng):
  data = records.serialize("recon", make_recon(rng))
  with pytest.raises(records.RecordError,
                     match="expected a clips record, found a recon record"):
    records.deserialize(data, kind="clips")


def test_deserialize_validates(rng):
  fields = make_recon(rng)
  fields["landmarks"][3, 1] = np.nan
  data = serialization.msgpack_serialize(
      {"schema_version": records.SCHEMA_VERSION, "kind": "recon",
       "fields": fields})
  with pytest.raises(records.RecordError,
                     match="^f record 2: .*'landmarks'.*non-finite"):
    records.deserialize(data, where="f record 2")


def test_jpeg_keeps_colour_order():
  red = np.zeros((16, 16, 3), np.uint8)
  red[..., 0] = 255
  data = records.encode_jpeg(red, 95)
  assert data.startswith(records.JPEG_SOI)
  decoded = records.decode_jpeg(data)
  assert decoded.shape == (16, 16, 3) and decoded.dtype == np.uint8
  assert decoded[..., 0].min() > 200
  assert decoded[..., 1:].max() < 50


def test_jpeg_round_trip_is_close(rng):
  y, x = np.mgrid[0:32, 0:48]
  image = np.stack([x * 5, y * 7, 128 + 0 * x], -1).astype(np.uint8)
  decoded = records.decode_jpeg(records.encode_jpeg(image, 100))
  assert decoded.shape == image.shape
  assert np.abs(decoded.astype(int) - image).mean() < 3


@pytest.mark.parametrize("data", [b"not a jpeg", b"\xff\xd8\xff\xe0garbage",
                                  b""])
def test_decode_jpeg_failure(data):
  with pytest.raises(records.RecordError, match="frame 3"):
    records.decode_jpeg(data, where="frame 3")


def test_decode_truncated_jpeg(rng):
  data = _jpeg(rng, (32, 32))
  with pytest.raises(records.RecordError, match="img"):
    records.decode_jpeg(data[:20], where="img")


@pytest.mark.parametrize("image", [np.zeros((4, 4, 3), np.float32),
                                   np.zeros((4, 4), np.uint8),
                                   np.zeros((4, 4, 4), np.uint8)])
def test_encode_jpeg_rejects_bad_images(image):
  with pytest.raises(ValueError, match="uint8"):
    records.encode_jpeg(image, 90)


def test_encode_jpeg_rejects_bad_quality():
  with pytest.raises(ValueError, match="quality"):
    records.encode_jpeg(np.zeros((4, 4, 3), np.uint8), 101)


@pytest.mark.parametrize("kind", records.KINDS)
def test_schema_description(kind, rng):
  text = records.schema_description(kind)
  assert text.startswith(f"{kind} record")
  for name in MAKERS[kind](rng):
    assert name in text
  assert "float32" in text
  expected_dims = {"recon": "(H, W, 3)", "multiview": "(3, 68, 3)",
                   "clips": "(T, 68, 3)"}[kind]
  assert expected_dims in text


def test_schema_description_unknown_kind():
  with pytest.raises(records.RecordError):
    records.schema_description("mesh")


@pytest.mark.parametrize("kind", records.KINDS)
def test_field_names_match_fixtures(kind, rng):
  fixture = set(MAKERS[kind](rng))
  assert set(records.field_names(kind, required_only=True)) <= fixture
  assert fixture <= set(records.field_names(kind))
  optional = set(records.field_names(kind)) - set(
      records.field_names(kind, required_only=True))
  assert optional == ({"original_image", "position_map", "yaw",
                       *records.RECON_3D_FIELDS, *records.RECON_2D_FIELDS}
                      if kind == "recon" else set())


def test_optional_recon_fields(rng):
  fields = make_recon(rng)
  # No 3DMM ground truth (AFLW2000-3D without a BFM): no position map.
  del fields["position_map"]
  back = records.deserialize(records.serialize("recon", fields), kind="recon")
  assert "position_map" not in back
  # The original photo may ride along for evaluation sets.
  fields["original_image"] = _jpeg(rng, (40, 50))
  back = records.deserialize(records.serialize("recon", fields), kind="recon")
  assert back["original_image"] == fields["original_image"]
  fields["original_image"] = b"not a jpeg"
  with pytest.raises(records.RecordError, match="original_image"):
    records.serialize("recon", fields)
  # Required fields stay required.
  del fields["original_image"], fields["landmarks"]
  with pytest.raises(records.RecordError, match="landmarks"):
    records.serialize("recon", fields)
  assert "(optional)" in records.schema_description("recon")


def test_2d_recon_records(rng):
  fields = make_recon(rng)
  for name in (*records.RECON_3D_FIELDS, "position_map"):
    del fields[name]
  visible = np.array([1, 0, 1], np.uint8)
  fields.update(points2d=np.array([[1.5, 2.0], [0, 0], [7.0, 8.25]],
                                  np.float32),
                points_visible=visible, scheme="aflw21",
                yaw=np.array([0.3], np.float32))
  back = records.deserialize(records.serialize("recon", fields), kind="recon")
  np.testing.assert_array_equal(back["points_visible"], visible)
  np.testing.assert_array_equal(back["points2d"], fields["points2d"])
  assert back["scheme"] == "aflw21" and "landmarks" not in back
  bad = dict(fields, points_visible=np.array([1, 2, 0], np.uint8))
  with pytest.raises(records.RecordError, match="0 or 1"):
    records.serialize("recon", bad)
  bad = dict(fields, points_visible=np.ones(4, np.uint8))
  with pytest.raises(records.RecordError, match="P=4"):
    records.serialize("recon", bad)
  bad = dict(fields)
  del bad["scheme"]
  with pytest.raises(records.RecordError, match="scheme"):
    records.serialize("recon", bad)
  # 3D fields on a 2D record, or 2D fields on a 3D one: refused.
  with pytest.raises(records.RecordError, match="not both.*pose"):
    records.serialize("recon", dict(fields, pose=np.zeros(7, np.float32)))
  with pytest.raises(records.RecordError, match="not both.*scheme"):
    records.serialize("recon", dict(make_recon(rng), scheme="aflw21"))
