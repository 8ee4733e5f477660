"""The record schema of jaxface datasets: definition, serialisation, validation.

This is the one module that knows what a record holds. Every record is a
msgpack map in the encoding of `flax.serialization.msgpack_serialize`
(numpy arrays as extension type 1 holding (shape, dtype name, C-order
bytes), numpy scalars as type 3), which round-trips arrays exactly. This
module writes and reads that encoding with `msgpack` itself, so that making
or reading records does not import JAX:

  {"schema_version": SCHEMA_VERSION, "kind": kind, "fields": {...}}

There are three kinds of record:

  recon      one face crop and its ground truth: 3D (PRNet-style UV position
             map, 68 landmarks, 300W-LP pose and 3DMM coefficients) or 2D
             (annotated 2D points of a landmark scheme with a visibility
             mask, and the yaw where known);
  multiview  three views (front, left, right) of one face with a canonical
             position map;
  clips      a sequence of T frames labelled as a true progression (1) or not
             (0), with the corruption that made it false.

Shapes use symbolic dims that must agree across the fields of one record:
H, W (position map resolution), S, E (shape / expression coefficient counts:
40 / 10 for synthetic data, 199 / 29 for BFM-based real data) and T (clip
length). All coordinates are in pixels of the stored crop unless a field says
otherwise; angles are in radians.

Any problem with a record raises `RecordError`, whose message says where (a
caller-supplied `where`, e.g. "recon-train.array_record-00000-of-00002 record
17") and what (the field, the expected versus the actual dtype or shape, ...).
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Mapping

import cv2
import msgpack
import numpy as np

SCHEMA_VERSION = 1
KINDS = ("recon", "multiview", "clips")
VIEWS = ("front", "left", "right")
EXTRA_POINT_NAMES = ("glabella", "ear_left", "ear_right", "head_left",
                     "head_right")
CORRUPTIONS = ("none", "shuffled", "identity_switch", "frozen", "jitter")

JPEG_SOI = b"\xff\xd8"


class RecordError(ValueError):
  """A record is malformed: wrong schema version, field, dtype, shape, value."""


@dataclasses.dataclass(frozen=True)
class Field:
  """One field of a record schema.

  Attributes:
    name: field name.
    type: "array" (numpy array), "jpeg" (JPEG bytes), "jpeg_list" (list of
      JPEG bytes), "int" (python int or numpy integer scalar) or "str".
    dtype: numpy dtype name of an "array" field.
    shape: dims of an "array" field, or (length,) of a "jpeg_list"; each dim
      is an int or a symbolic name (str).
    doc: what the field means, with units.
    optional: the field may be absent (it is validated when present).
  """
  name: str
  type: str
  dtype: str | None = None
  shape: tuple[int | str, ...] = ()
  doc: str = ""
  optional: bool = False


_NUM_VIEWS = len(VIEWS)
_NUM_EXTRA = len(EXTRA_POINT_NAMES)

_DIMS = types.MappingProxyType({
    "H": "position map height in pixels (the dataset resolution)",
    "W": "position map width in pixels (the dataset resolution)",
    "S": "shape coefficient count (40 synthetic, 199 BFM)",
    "E": "expression coefficient count (10 synthetic, 29 BFM)",
    "T": "clip length in frames",
    "P": "point count of a 2D record's landmark scheme",
})
# A recon record is 3D (a 3DMM fit: landmarks and the fields beside them)
# or 2D (annotated 2D points of a landmark scheme, e.g. AFLW's 21); these
# are the fields each needs besides the common ones.
RECON_3D_FIELDS = ("landmarks", "pose", "shape_coeffs", "expression_coeffs")
RECON_2D_FIELDS = ("points2d", "points_visible", "scheme")

_SCHEMAS = types.MappingProxyType({
    "recon": (
        Field("image", "jpeg",
               doc="JPEG of the RGB face crop"),
        Field("position_map", "array", "float32", ("H", "W", 3),
               "UV position map: (x, y, z) in crop pixels, z towards camera; "
               "absent where no 3DMM ground truth exists (AFLW2000-3D "
               "converted without a BFM)", optional=True),
        Field("landmarks", "array", "float32", (68, 3),
               "68 3D landmarks (x, y, z) in crop pixels (3D records)",
               optional=True),
        Field("pose", "array", "float32", (7,),
               "300W-LP Pose_Para: pitch, yaw, roll (radians), tx, ty, tz, "
               "scale (3D records)", optional=True),
        Field("shape_coeffs", "array", "float32", ("S",),
               "3DMM shape coefficients (3D records)", optional=True),
        Field("expression_coeffs", "array", "float32", ("E",),
               "3DMM expression coefficients (3D records)", optional=True),
        Field("points2d", "array", "float32", ("P", 2),
               "annotated 2D landmarks (x, y) in crop pixels, in the order "
               "of `scheme`; 0 where not visible (2D records)",
               optional=True),
        Field("points_visible", "array", "uint8", ("P",),
               "1 where the point of `points2d` is annotated and visible, "
               "else 0 (2D records)", optional=True),
        Field("scheme", "str",
               doc="name of the landmark scheme of `points2d` "
               "(`jaxface.face.schemes.SCHEMES`; 2D records)", optional=True),
        Field("yaw", "array", "float32", (1,),
               "the face's yaw in radians, where the dataset gives it (2D "
               "records; jaxface's sign: positive turns the face to the "
               "image left)", optional=True),
        Field("face_box", "array", "float32", (4,),
               "x_min, y_min, x_max, y_max of the landmarks in original-image "
               "pixels"),
        Field("crop_transform", "array", "float32", (3, 3),
               "homogeneous similarity: original-image pixels -> crop pixels"),
        Field("original_size", "array", "int32", (2,),
               "original image height, width in pixels"),
        Field("identity", "int", doc="subject id"),
        Field("source", "str", doc="where the record came from"),
        Field("original_image", "jpeg",
               doc="JPEG of the whole original photo (evaluation sets, to "
               "draw predictions mapped back with crop_transform)",
               optional=True),
    ),
    "multiview": (
        Field("images", "jpeg_list", shape=(_NUM_VIEWS,),
               doc="JPEGs of the RGB crops: " + ", ".join(VIEWS)),
        Field("landmarks", "array", "float32", (_NUM_VIEWS, 68, 3),
               "68 3D landmarks per view, in that view's crop pixels"),
        Field("extra_points", "array", "float32", (_NUM_VIEWS, _NUM_EXTRA, 3),
               "per view, 3D points " + ", ".join(EXTRA_POINT_NAMES) +
               " in crop pixels"),
        Field("poses", "array", "float32", (_NUM_VIEWS, 7),
               "per view pitch, yaw, roll (radians), tx, ty, tz, scale"),
        Field("crop_transforms", "array", "float32", (_NUM_VIEWS, 3, 3),
               "per view homogeneous similarity: original -> crop pixels"),
        Field("canonical_position_map", "array", "float32", ("H", "W", 3),
               "UV position map of the face in the canonical (frontal) frame"),
        Field("shape_coeffs", "array", "float32", ("S",),
               "3DMM shape coefficients"),
        Field("expression_coeffs", "array", "float32", ("E",),
               "3DMM expression coefficients"),
        Field("identity", "int", doc="subject id"),
        Field("source", "str", doc="where the record came from"),
    ),
    "clips": (
        Field("frames", "jpeg_list", shape=("T",),
               doc="JPEGs of the RGB frames, in clip order"),
        Field("landmarks", "array", "float32", ("T", 68, 3),
               "68 3D landmarks per frame, in frame pixels"),
        Field("poses", "array", "float32", ("T", 7),
               "per frame pitch, yaw, roll (radians), tx, ty, tz, scale"),
        Field("identities", "array", "int64", ("T",),
               "subject id of each frame"),
        Field("label", "int", doc="1 = true progression, 0 = not"),
        Field("corruption", "int",
               doc="index into CORRUPTIONS (" + ", ".join(CORRUPTIONS) +
               "); 0 iff label is 1"),
        Field("source", "str", doc="where the record came from"),
    ),
})


def schema(kind: str) -> tuple[Field, ...]:
  """The fields of a record of `kind`, in schema order."""
  return _schema(kind, "schema")


def _schema(kind: Any, where: str) -> tuple[Field, ...]:
  if not isinstance(kind, str) or kind not in _SCHEMAS:
    raise RecordError(
        f"{where}: unknown record kind {kind!r}; expected one of {KINDS}")
  return _SCHEMAS[kind]


def _shape_str(shape: tuple[int | str, ...]) -> str:
  if len(shape) == 1:
    return f"({shape[0]},)"
  return "(" + ", ".join(str(d) for d in shape) + ")"


def _is_int(value: Any) -> bool:
  return (isinstance(value, (int, np.integer))
          and not isinstance(value, (bool, np.bool_)))


def _check_jpeg(value: Any, label: str) -> str | None:
  if not isinstance(value, bytes):
    return f"{label}: expected JPEG bytes, got {type(value).__name__}"
  if not value.startswith(JPEG_SOI):
    return (f"{label}: not a JPEG (does not start with the SOI marker "
            f"ff d8; starts with {value[:4].hex(' ') or 'nothing'})")
  return None


def _check_field(spec: Field, value: Any, dims: dict[str, tuple[int, str]],
                 problems: list[str]) -> bool:
  """Checks one field, binding symbolic dims; returns True if it is sound."""
  label = f"field '{spec.name}'"
  if spec.type == "int":
    if not _is_int(value):
      problems.append(f"{label}: expected an int, got {type(value).__name__}")
      return False
    return True
  if spec.type == "str":
    if not isinstance(value, str):
      problems.append(f"{label}: expected a str, got {type(value).__name__}")
      return False
    return True
  if spec.type == "jpeg":
    problem = _check_jpeg(value, label)
    if problem:
      problems.append(problem)
    return problem is None

  if spec.type == "jpeg_list":
    if not isinstance(value, (list, tuple)):
      problems.append(f"{label}: expected a list of JPEG bytes, got "
                      f"{type(value).__name__}")
      return False
    sound = _bind_dims(spec, (len(value),), dims, problems, what="length")
    for i, item in enumerate(value):
      problem = _check_jpeg(item, f"field '{spec.name}'[{i}]")
      if problem:
        problems.append(problem)
        sound = False
    return sound

  assert spec.type == "array", spec
  if not isinstance(value, np.ndarray):
    problems.append(f"{label}: expected a numpy array of {spec.dtype} "
                    f"{_shape_str(spec.shape)}, got {type(value).__name__}")
    return False
  if value.dtype != np.dtype(spec.dtype):
    problems.append(f"{label}: expected dtype {spec.dtype}, got "
                    f"{value.dtype}")
    return False
  if value.ndim != len(spec.shape):
    problems.append(f"{label}: expected rank {len(spec.shape)} "
                    f"{_shape_str(spec.shape)}, got shape {value.shape}")
    return False
  if not _bind_dims(spec, value.shape, dims, problems, what="shape"):
    return False
  if value.dtype.kind == "f" and not np.isfinite(value).all():
    bad = np.argwhere(~np.isfinite(value))
    problems.append(f"{label}: {len(bad)} non-finite value(s) (NaN or inf), "
                    f"first at index {tuple(int(i) for i in bad[0])}")
    return False
  return True


def _bind_dims(spec: Field, actual: tuple[int, ...],
               dims: dict[str, tuple[int, str]], problems: list[str],
               what: str) -> bool:
  """Matches actual dims against spec.shape, binding symbolic ones in dims."""
  label = f"field '{spec.name}'"
  expected = _shape_str(spec.shape) if what == "shape" else str(spec.shape[0])
  got = str(tuple(actual)) if what == "shape" else str(actual[0])
  sound = True
  for axis, (want, have) in enumerate(zip(spec.shape, actual)):
    if isinstance(want, int):
      if have != want:
        problems.append(f"{label}: expected {what} {expected}, got {got}")
        return False
    elif have < 1:
      problems.append(f"{label}: symbolic dim {want} (axis {axis}) must be "
                      f"at least 1, got {what} {got}")
      sound = False
    elif want in dims and dims[want][0] != have:
      size, other = dims[want]
      problems.append(f"{label}: {what} {got} has {want}={have}, but field "
                      f"'{other}' has {want}={size} (expected {expected})")
      sound = False
    else:
      dims.setdefault(want, (have, spec.name))
  return sound


def _check_values(kind: str, fields: Mapping[str, Any], sound: set[str],
                  problems: list[str]) -> None:
  """Checks invariants between values, for fields that passed type checks."""
  if kind == "recon":
    is_3d = "landmarks" in fields
    need = RECON_3D_FIELDS if is_3d else RECON_2D_FIELDS
    missing = [name for name in need if name not in fields]
    if missing:
      problems.append(
          f"missing field(s) {missing} of a {'3D' if is_3d else '2D'} "
          "recon record" + ("" if is_3d else
                            " (or 'landmarks' and the 3D fields)"))
    other = [name for name in (RECON_2D_FIELDS if is_3d else
                               RECON_3D_FIELDS + ("position_map",))
             if name in fields]
    if other:
      problems.append(f"a recon record is 3D (with 'landmarks') or 2D (with "
                      f"{list(RECON_2D_FIELDS)}), not both: it has "
                      f"{other}" + ("" if is_3d else " without 'landmarks'"))
    if "points_visible" in sound and (fields["points_visible"] > 1).any():
      problems.append("field 'points_visible': expected 0 or 1, got "
                      f"{sorted(set(fields['points_visible'].tolist()))}")
    if "original_size" in sound and (fields["original_size"] < 1).any():
      problems.append("field 'original_size': height and width must be "
                      f"positive, got {fields['original_size'].tolist()}")
    if "face_box" in sound:
      x0, y0, x1, y1 = fields["face_box"].tolist()
      if x0 > x1 or y0 > y1:
        problems.append("field 'face_box': expected x_min <= x_max and "
                        f"y_min <= y_max, got {[x0, y0, x1, y1]}")
  transforms = {"recon": "crop_transform",
                "multiview": "crop_transforms"}.get(kind)
  if transforms in sound:
    last_row = fields[transforms][..., 2, :]
    if not np.allclose(last_row, [0.0, 0.0, 1.0], atol=1e-6):
      problems.append(f"field '{transforms}': a homogeneous transform must "
                      f"have last row [0, 0, 1], got {last_row.tolist()}")
  if kind == "clips":
    label_ok = "label" in sound and fields["label"] in (0, 1)
    if "label" in sound and not label_ok:
      problems.append(f"field 'label': expected 0 or 1, got "
                      f"{fields['label']}")
    corruption_ok = ("corruption" in sound
                     and 0 <= fields["corruption"] < len(CORRUPTIONS))
    if "corruption" in sound and not corruption_ok:
      problems.append(f"field 'corruption': expected an index in "
                      f"[0, {len(CORRUPTIONS)}) into {CORRUPTIONS}, got "
                      f"{fields['corruption']}")
    if label_ok and corruption_ok and (
        (fields["label"] == 1) != (fields["corruption"] == 0)):
      name = CORRUPTIONS[fields["corruption"]]
      problems.append(
          f"field 'corruption': is {fields['corruption']} ({name}) with "
          f"label {fields['label']}; corruption must be 0 (none) iff label "
          "is 1")


def validate(kind: str, fields: Mapping[str, Any],
             where: str = "record") -> None:
  """Checks that `fields` is a well-formed record of `kind`.

  Strict: arrays must already have the schema dtype (`serialize` casts them
  before validating; data read back from disk is never cast). A "kind" entry
  in `fields` is allowed if it equals `kind`, so that a dict returned by
  `deserialize` validates as is.

  Args:
    kind: one of KINDS.
    fields: field name -> value.
    where: where the record is, for error messages.

  Raises:
    RecordError: naming `where` and every problem found (field, expected
      versus actual dtype / shape / value).
  """
  schema = _schema(kind, where)
  if not isinstance(fields, Mapping):
    raise RecordError(f"{where}: a {kind} record must be a mapping of fields, "
                      f"got {type(fields).__name__}")
  problems = []
  names = {spec.name for spec in schema}
  present = set(fields)
  if "kind" in present and "kind" not in names:
    present.discard("kind")
    if fields["kind"] != kind:
      problems.append(f"'kind' entry is {fields['kind']!r}, but the record "
                      f"is validated as {kind!r}")
  missing = [spec.name for spec in schema
             if spec.name not in present and not spec.optional]
  if missing:
    problems.append(f"missing field(s) {missing}")
  unexpected = sorted(present - names, key=str)
  if unexpected:
    problems.append(f"unexpected field(s) {unexpected}; a {kind} record has "
                    f"{[spec.name for spec in schema]}")
  dims: dict[str, tuple[int, str]] = {}
  sound = set()
  for spec in schema:
    if spec.name in present and _check_field(spec, fields[spec.name], dims,
                                             problems):
      sound.add(spec.name)
  _check_values(kind, fields, sound, problems)
  if problems:
    raise RecordError(f"{where}: invalid {kind} record: " + "; ".join(problems))


def _coerce(spec: Field, value: Any) -> Any:
  """Converts value to what the schema stores, where that loses nothing."""
  if spec.type == "array":
    if isinstance(value, (str, bytes)):
      return value
    try:
      array = np.asarray(value)
    except Exception:  # pylint: disable=broad-except
      return value  # validate() reports the type.
    target = np.dtype(spec.dtype)
    if target.kind == "f" and array.dtype.kind in "iuf":
      with np.errstate(over="ignore"):  # overflow -> inf, which validate names.
        return np.asarray(array, dtype=target, order="C")
    if target.kind in "iu" and array.dtype.kind in "iu":
      cast = np.asarray(array, dtype=target, order="C")
      # Integers that do not fit are left as they are, for validate to reject.
      return cast if np.array_equal(cast, array) else array
    return array
  if spec.type == "int":
    if isinstance(value, np.ndarray) and value.ndim == 0:
      value = value[()]
    return int(value) if _is_int(value) else value
  if spec.type == "str":
    return str(value) if isinstance(value, np.str_) else value
  if spec.type == "jpeg":
    return _coerce_bytes(value)
  if spec.type == "jpeg_list" and isinstance(value, (list, tuple)):
    return [_coerce_bytes(item) for item in value]
  return value


def _coerce_bytes(value: Any) -> Any:
  # msgpack_serialize packs with strict_types: bytes subclasses such as
  # np.bytes_ would fail to pack.
  if isinstance(value, (bytes, bytearray, memoryview)):
    return bytes(value)
  return value


# Extension type codes of flax.serialization's msgpack encoding.
_EXT_NDARRAY = 1
_EXT_NPSCALAR = 3
# flax splits arrays above this many bytes into chunks; no record holds one.
_MAX_ARRAY_BYTES = 2**30


def _pack_array(array: np.ndarray) -> bytes:
  return msgpack.packb((array.shape, array.dtype.name, array.tobytes("C")),
                       use_bin_type=True)


def _unpack_array(data: bytes) -> np.ndarray:
  shape, dtype_name, buffer = msgpack.unpackb(data, raw=True)
  return np.frombuffer(buffer, dtype=np.dtype(dtype_name)).reshape(shape)


def _ext_pack(value: Any) -> Any:
  if isinstance(value, np.ndarray):
    if value.dtype.hasobject or value.dtype.isalignedstruct:
      raise TypeError(f"cannot store an array of dtype {value.dtype}")
    if value.nbytes > _MAX_ARRAY_BYTES:
      raise TypeError(f"cannot store an array of {value.nbytes} bytes "
                      f"(at most {_MAX_ARRAY_BYTES})")
    return msgpack.ExtType(_EXT_NDARRAY, _pack_array(value))
  if isinstance(value, np.generic):
    return msgpack.ExtType(_EXT_NPSCALAR, _pack_array(np.asarray(value)))
  return value


def _ext_unpack(code: int, data: bytes) -> Any:
  if code == _EXT_NDARRAY:
    return _unpack_array(data)
  if code == _EXT_NPSCALAR:
    return _unpack_array(data)[()]
  raise ValueError(f"unknown msgpack extension type {code}")


def _sorted_keys(value: Any) -> Any:
  # flax's encoder rebuilds the tree with jax.tree_util, which orders each
  # dict's keys; doing the same keeps the bytes equal to flax's.
  if isinstance(value, dict):
    return {key: _sorted_keys(value[key]) for key in sorted(value)}
  if isinstance(value, list):
    return [_sorted_keys(item) for item in value]
  return value


def serialize(kind: str, fields: Mapping[str, Any], *,
              where: str = "record") -> bytes:
  """Validates a record and serialises it with msgpack.

  Numeric arrays (and lists, jax arrays) are cast to the schema dtype first
  (e.g. float64 -> float32); integer fields accept numpy integers. Casts that
  would lose information (float -> int) are not made, so validation rejects
  them.

  Args:
    kind: one of KINDS.
    fields: field name -> value, as in the schema (see `schema_description`).
      A "kind" entry equal to `kind` is allowed and dropped.
    where: names the record in error messages.

  Returns:
    The serialised record.

  Raises:
    RecordError: if the record does not match the schema.
  """
  schema = _schema(kind, where)
  if not isinstance(fields, Mapping):
    raise RecordError(f"{where}: a {kind} record must be a mapping of fields, "
                      f"got {type(fields).__name__}")
  specs = {spec.name: spec for spec in schema}
  coerced = {name: _coerce(specs[name], value) if name in specs else value
             for name, value in fields.items()}
  validate(kind, coerced, where)
  coerced.pop("kind", None)
  try:
    return msgpack.packb(
        _sorted_keys({"schema_version": SCHEMA_VERSION, "kind": kind,
                      "fields": coerced}),
        default=_ext_pack, strict_types=True)
  except (TypeError, ValueError, OverflowError) as e:
    raise RecordError(f"{where}: cannot serialise the {kind} record: "
                      f"{e}") from e


def deserialize(data: bytes, *, kind: str | None = None,
                where: str = "record") -> dict[str, Any]:
  """Restores and validates a serialised record.

  Args:
    data: bytes from `serialize`.
    kind: if given, the kind the record must have.
    where: where the bytes came from, for error messages, e.g.
      "recon-train.array_record-00000-of-00002 record 17".

  Returns:
    {"kind": kind, **fields}. Arrays are read-only views into `data`'s copy;
    copy them before modifying in place.

  Raises:
    RecordError: if the bytes are not a record (corrupted), have another
      schema version, another kind than `kind`, or invalid fields.
  """
  if kind is not None:
    _schema(kind, where)
  if not isinstance(data, (bytes, bytearray, memoryview)):
    raise RecordError(f"{where}: corrupted record: expected bytes, got "
                      f"{type(data).__name__}")
  if not data:
    raise RecordError(f"{where}: corrupted record: empty")
  try:
    record = msgpack.unpackb(bytes(data), ext_hook=_ext_unpack, raw=False,
                             strict_map_key=False)
  except Exception as e:  # pylint: disable=broad-except
    # msgpack raises many types (ExtraData, FormatError, ValueError, ...).
    raise RecordError(
        f"{where}: corrupted record: {len(data)} bytes that are not a "
        f"msgpack-encoded jaxface record ({type(e).__name__}: {e})") from e
  if not isinstance(record, dict):
    raise RecordError(f"{where}: corrupted record: decodes to a "
                      f"{type(record).__name__}, not a dict")
  if "schema_version" not in record:
    raise RecordError(
        f"{where}: corrupted record or not a jaxface record: no "
        f"schema_version (keys {sorted(map(str, record))}); this jaxface "
        f"reads schema version {SCHEMA_VERSION}")
  version = record["schema_version"]
  if not _is_int(version) or version != SCHEMA_VERSION:
    raise RecordError(
        f"{where}: record has schema version {version!r}, but this jaxface "
        f"reads schema version {SCHEMA_VERSION}; regenerate the dataset with "
        "this jaxface (`jaxface data synth` or a converter) or convert it to "
        f"schema version {SCHEMA_VERSION}")
  if set(record) != {"schema_version", "kind", "fields"}:
    raise RecordError(
        f"{where}: corrupted record: top-level keys "
        f"{sorted(map(str, record))}, expected ['fields', 'kind', "
        "'schema_version']")
  record_kind = record["kind"]
  if not isinstance(record_kind, str) or record_kind not in KINDS:
    raise RecordError(f"{where}: corrupted record: unknown kind "
                      f"{record_kind!r}; expected one of {KINDS}")
  if kind is not None and record_kind != kind:
    raise RecordError(f"{where}: expected a {kind} record, found a "
                      f"{record_kind} record")
  fields = record["fields"]
  if not isinstance(fields, dict):
    raise RecordError(f"{where}: corrupted record: 'fields' is a "
                      f"{type(fields).__name__}, not a dict")
  if "kind" in fields:
    raise RecordError(f"{where}: corrupted record: unexpected field 'kind'")
  validate(record_kind, fields, where)
  return {"kind": record_kind, **fields}


# Quality of the JPEGs jaxface writes (renders and converted photos): close
# to the original image at a fraction of a PNG's size.
JPEG_QUALITY = 95


def to_unit_float(images):
  """uint8 pixels (numpy or jax, any shape) -> float32 in [0, 1]."""
  return images.astype(np.float32) / np.float32(255)


def encode_jpeg(rgb: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
  """Encodes an RGB image as JPEG.

  Args:
    rgb: uint8 (H, W, 3) image, channels in RGB order.
    quality: JPEG quality in [0, 100].

  Returns:
    The JPEG bytes (baseline, 4:2:0 chroma subsampling as OpenCV defaults).
  """
  rgb = np.asarray(rgb)
  if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[-1] != 3:
    raise ValueError(f"encode_jpeg expects a uint8 (H, W, 3) RGB image, got "
                     f"{rgb.dtype} {rgb.shape}")
  if not _is_int(quality) or not 0 <= quality <= 100:
    raise ValueError(f"JPEG quality must be an int in [0, 100], got "
                     f"{quality!r}")
  bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)  # OpenCV is BGR.
  ok, buffer = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY,
                                          int(quality)])
  if not ok:
    raise ValueError(f"OpenCV failed to encode a {rgb.shape} image as JPEG")
  return buffer.tobytes()


def decode_jpeg(data: bytes, where: str = "image") -> np.ndarray:
  """Decodes JPEG bytes into a uint8 (H, W, 3) RGB image.

  EXIF orientation is ignored: landmarks and transforms refer to the stored
  pixel grid. Grayscale JPEGs are expanded to 3 channels.

  Raises:
    RecordError: naming `where`, if the bytes are not a decodable JPEG.
  """
  problem = _check_jpeg(data, where) if isinstance(data, bytes) else (
      f"{where}: expected JPEG bytes, got {type(data).__name__}")
  if problem:
    raise RecordError(problem)
  try:
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8),
                       cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
  except cv2.error as e:
    raise RecordError(f"{where}: cannot decode JPEG ({len(data)} bytes): "
                      f"{e}") from e
  if bgr is None or bgr.ndim != 3 or bgr.shape[-1] != 3:
    raise RecordError(f"{where}: cannot decode JPEG ({len(data)} bytes): "
                      "corrupted or truncated")
  return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def field_names(kind: str, required_only: bool = False) -> tuple[str, ...]:
  """The field names of a record of `kind`, in schema order."""
  return tuple(spec.name for spec in _schema(kind, "schema")
               if not (required_only and spec.optional))


def schema_description(kind: str) -> str:
  """A readable listing of the fields of `kind`: name, dtype, shape, meaning."""
  schema = _schema(kind, "schema")
  rows = []
  for spec in schema:
    if spec.type == "array":
      typ, shape = spec.dtype, _shape_str(spec.shape)
    elif spec.type == "jpeg_list":
      typ, shape = "list[jpeg]", f"[{spec.shape[0]}]"
    else:
      typ, shape = {"jpeg": "jpeg bytes", "int": "int",
                    "str": "str"}[spec.type], "scalar"
    rows.append((spec.name, typ, shape,
                 spec.doc + (" (optional)" if spec.optional else "")))
  widths = [max(len(row[i]) for row in rows) for i in range(3)]
  lines = [f"{kind} record (schema version {SCHEMA_VERSION}):"]
  for row in rows:
    lines.append("  " + "  ".join(
        cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[3])
  used = sorted({d for spec in schema for d in spec.shape
                 if isinstance(d, str)}, key="HWSETP".index)
  if used:
    lines.append("symbolic dims (must agree across fields):")
    lines.extend(f"  {d}: {_DIMS[d]}" for d in used)
  return "\n".join(lines)
