"""jaxface record datasets as TensorFlow Datasets, without TensorFlow.

`JaxfaceRecords` is a `tfds.core.GeneratorBasedBuilder` (TFDS name
"jaxface_records", one BuilderConfig per record kind: "recon", "multiview",
"clips") that turns a jaxface dataset directory (shards + dataset.json, made by
`jaxface data synth` or a converter) into a TFDS dataset in `array_record`
files, readable with `tfds.data_source` / grain. Neither preparing nor
reading needs TensorFlow:

  builder = prepare("/data/synth", "recon", "/data/tfds")
  source = data_source("/data/tfds", "recon", "train")   # or the jaxface dir
  example = source[0]      # {"image": b"\xff\xd8...", "position_map": ...}
  data = example_to_record_bytes(example, "recon")  # = the original record

Features mirror `jaxface.data.records` field by field (derived from its schema,
so they follow it):

  "jpeg" field        tfds.features.Image(shape=(None, None, 3), "jpeg"): the
                      record's JPEG bytes are stored as they are (TFDS passes
                      bytes through; encoding arrays would need TensorFlow).
  "jpeg_list" field   tfds.features.Sequence(Image, length=n).
  "array" field       tfds.features.Tensor of the schema dtype and the
                      dataset's shape: symbolic dims (H, W, S, E, T) are read
                      from the first record of the kind (H, W fall back to
                      dataset.json's "resolution"), or left None if the kind
                      has no records.
  "int" field         tfds.features.Scalar(int64).
  "str" field         tfds.features.Text (read back as utf-8 bytes).
  optional fields     (e.g. recon "position_map", "original_image") become
                      features only if the first record has them, as optional
                      features (None where a record lacks them). TFDS Images
                      cannot be optional, so an optional JPEG is a
                      Tensor(shape=(), dtype=object) of the JPEG bytes.

TFDS's numpy decoding turns Image features into uint8 (h, w, 3) RGB arrays
(OpenCV), which would make the JPEGs of a round trip differ. `data_source` and
`image_decoders` therefore skip image decoding by default, so examples carry
the exact JPEG bytes, and `example_to_record_bytes` restores byte-identical
records. (TFDS 4.9.10's own `tfds.decode.SkipDecoding` fails on a
`Sequence(Image)` in numpy mode: it lacks `decode_batch_example_np`;
`SkipImageDecoding` adds it.)

Example order is the jaxface order (`disable_shuffling=True`): example i of a
split is record i of that (kind, split). Splits come from dataset.json, except
empty ones: TFDS cannot write a split without examples, so they are left out
(and listed in the dataset's metadata, "empty_splits").

A prepared dataset lives in `{data_dir}/jaxface_records/{kind}/1.0.0/` and
holds the sha-256 of the source's dataset.json in its metadata; `prepare` and
`data_source` refuse to serve a prepared copy whose source has changed since
(pass `overwrite=True` to prepare again). Use one `data_dir` per source
dataset: two sources of the same kind would share that directory;
`data_source(jaxface_dir, ...)` uses `{jaxface_dir}/tfds`.
"""

from __future__ import annotations

import os
import shutil
from typing import Any, Iterator, Mapping, Sequence

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from jaxface import files
from jaxface.data import records
from jaxface.data import shards

NAME = "jaxface_records"
DATASET_VERSION = "1.0.0"
# Where `data_source(source_dir, ...)` prepares a jaxface dataset by default.
DEFAULT_SUBDIR = "tfds"


class StaleDatasetError(shards.DatasetError):
  """A prepared TFDS dataset was made from other data than its source now."""


class SkipImageDecoding(tfds.decode.SkipDecoding):
  """Leaves Image features (also in a Sequence) as their encoded bytes.

  With numpy decoding (`tfds.data_source`), an Image gives `bytes`, a
  Sequence of Images a (n,) object array of `bytes`.
  """

  def decode_batch_example_np(self, serialized_example):
    return serialized_example


def _schema(kind: str) -> tuple[Any, ...]:
  """The `records` schema of `kind`: fields with name, type, dtype, shape."""
  if kind not in records.KINDS:
    raise ValueError(f"unknown record kind {kind!r}; expected one of "
                     f"{records.KINDS}")
  return records.schema(kind)


def _is_optional(spec: Any) -> bool:
  return bool(getattr(spec, "optional", False))


def source_fingerprint(source_dir: str | os.PathLike[str]) -> str:
  """sha-256 (hex) of a jaxface dataset's dataset.json."""
  return files.sha256_of(
      os.path.join(os.fspath(source_dir), shards.DATASET_INFO))


def source_layout(source_dir: str | os.PathLike[str], kind: str
                  ) -> dict[str, Any]:
  """What the features of `kind` need to know about a jaxface dataset.

  Args:
    source_dir: jaxface dataset directory.
    kind: record kind.

  Returns:
    {"dims": {symbolic dim: size} (H, W, S, E, T as far as known),
     "fields": names of the fields present (required ones, and optional ones
       the first record has),
     "splits": {split: count} from dataset.json}.

  Raises:
    DatasetError: if the dataset has no records of `kind`.
  """
  source_dir = os.fspath(source_dir)
  info = shards.read_dataset_info(source_dir)
  if kind not in info["kinds"]:
    raise shards.DatasetError(
        f"dataset {source_dir} has no {kind!r} records; it has kinds "
        f"{sorted(info['kinds'])}")
  splits = {split: entry["count"]
            for split, entry in info["kinds"][kind].items()}
  schema = _schema(kind)
  dims: dict[str, int] = {}
  fields = [spec.name for spec in schema if not _is_optional(spec)]
  first = next((split for split, count in splits.items() if count), None)
  if first is not None:
    with shards.RecordReader(source_dir, kind, first) as reader:
      record = reader[0]
    fields = [spec.name for spec in schema if spec.name in record]
    for spec in schema:
      if spec.name not in record:
        continue
      if spec.type == "array":
        actual = record[spec.name].shape
      elif spec.type == "jpeg_list":
        actual = (len(record[spec.name]),)
      else:
        continue
      for want, have in zip(spec.shape, actual):
        if isinstance(want, str):
          dims.setdefault(want, int(have))
  resolution = info.get("resolution")
  if isinstance(resolution, int) and not isinstance(resolution, bool):
    dims.setdefault("H", resolution)
    dims.setdefault("W", resolution)
  return {"dims": dims, "fields": fields, "splits": splits}


def _image(doc: str) -> tfds.features.Image:
  return tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg",
                             doc=doc)


def features_for(kind: str, dims: Mapping[str, int] | None = None,
                 fields: Sequence[str] | None = None
                 ) -> tfds.features.FeaturesDict:
  """The TFDS features of a `kind` record (see the module docstring).

  Args:
    kind: record kind.
    dims: sizes of the schema's symbolic dims (H, W, S, E, T); missing ones
      are None (variable).
    fields: the fields to include (default: the required ones).

  Returns:
    A FeaturesDict with one feature per field, named as the field.
  """
  dims = dict(dims or {})
  schema = _schema(kind)
  if fields is None:
    fields = [spec.name for spec in schema if not _is_optional(spec)]
  features = {}
  for spec in schema:
    if spec.name not in fields:
      continue
    optional = _is_optional(spec)
    shape = tuple(dims.get(d) if isinstance(d, str) else d
                  for d in spec.shape)
    doc = spec.doc + (" (optional: None where absent)" if optional else "")
    if spec.type == "jpeg" and optional:
      feature = tfds.features.Tensor(shape=(), dtype=np.object_,
                                     optional=True, doc=doc + "; JPEG bytes")
    elif spec.type == "jpeg":
      feature = _image(doc)
    elif spec.type == "jpeg_list":
      feature = tfds.features.Sequence(_image(doc), length=shape[0], doc=doc)
    elif spec.type == "array":
      feature = tfds.features.Tensor(shape=shape, dtype=np.dtype(spec.dtype),
                                     optional=optional, doc=doc)
    elif spec.type == "int":
      feature = tfds.features.Scalar(np.int64, optional=optional, doc=doc)
    elif spec.type == "str":
      feature = tfds.features.Text(optional=optional, doc=doc)
    else:
      raise ValueError(f"field {spec.name!r} of {kind}: unknown field type "
                       f"{spec.type!r}")
    features[spec.name] = feature
  return tfds.features.FeaturesDict(features)


def record_to_example(record: Mapping[str, Any], kind: str,
                      fields: Sequence[str], where: str = "record"
                      ) -> dict[str, Any]:
  """A deserialised record as the example TFDS encodes.

  Args:
    record: from `records.deserialize` (a "kind" entry is dropped).
    kind: its kind.
    fields: the features' field names (`source_layout(...)["fields"]`).
    where: names the record in error messages.

  Returns:
    {field: value}: JPEGs as bytes, JPEG lists as lists of bytes, optional
    fields the record lacks as None.

  Raises:
    RecordError: if the record has a field that is not a feature (an
      optional field absent from the kind's first record).
  """
  extra = sorted(set(record) - set(fields) - {"kind"})
  if extra:
    raise records.RecordError(
        f"{where}: {kind} record has optional field(s) {extra} that the first "
        f"{kind} record of the dataset lacks, so the TFDS features do not "
        "have them")
  example = {}
  for name in fields:
    value = record.get(name)
    if isinstance(value, tuple):
      value = list(value)
    example[name] = value
  return example


class JaxfaceRecords(tfds.core.GeneratorBasedBuilder):
  """jaxface records of one kind (the config) from a jaxface dataset directory.

  Construct with `source_dir=` to prepare (features and splits come from the
  source's dataset.json and first record); without it, an already prepared
  dataset in `data_dir` is opened with its stored features (as
  `tfds.builder("jaxface_records/recon", data_dir=...)` does).
  """

  VERSION = tfds.core.Version(DATASET_VERSION)
  RELEASE_NOTES = {
      DATASET_VERSION:
          f"jaxface record schema version {records.SCHEMA_VERSION}.",
  }
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name=kind, description=f"jaxface {kind} records")
      for kind in records.KINDS
  ]
  # Shadows DatasetBuilder.code_path, which for a builder defined in a package
  # imports `importlib_resources`, a package TFDS 4.9.10 does not declare for
  # Python >= 3.9 (tensorflow/datasets#11212): without this, preparing fails
  # with "No module named 'importlib_resources'" in a fresh environment.
  code_path = epath.Path(__file__)

  def __init__(self, *, source_dir: str | os.PathLike[str] | None = None,
               file_format: str | None = "array_record", **kwargs):
    """Constructs the builder.

    Args:
      source_dir: the jaxface dataset directory to prepare from; None to
        open a prepared dataset.
      file_format: TFDS file format ("array_record": random access, no
        TensorFlow needed to read).
      **kwargs: `tfds.core.DatasetBuilder` arguments: `config` (the kind),
        `data_dir`, `version`.
    """
    self._source_dir = (os.path.abspath(os.fspath(source_dir))
                        if source_dir is not None else None)
    self._layout = None
    super().__init__(file_format=file_format, **kwargs)
    # DatasetBuilder pickles by re-running __init__ on _original_state.
    self._original_state.update(source_dir=self._source_dir,
                                file_format=file_format)

  @property
  def kind(self) -> str:
    return self.builder_config.name

  @property
  def source_dir(self) -> str | None:
    return self._source_dir

  def _source_layout(self) -> dict[str, Any]:
    if self._layout is None:
      self._layout = source_layout(self._source_dir, self.kind)
    return self._layout

  def _info(self) -> tfds.core.DatasetInfo:
    kind = self.kind
    metadata = tfds.core.MetadataDict()
    if self._source_dir is not None:
      layout = self._source_layout()
      features = features_for(kind, layout["dims"], layout["fields"])
      metadata.update(
          source_dir=self._source_dir,
          source_fingerprint=source_fingerprint(self._source_dir),
          dims=layout["dims"],
          empty_splits=[split for split, count in layout["splits"].items()
                        if not count],
          record_schema_version=records.SCHEMA_VERSION)
    elif (self.data_path / "features.json").exists():
      features = tfds.features.FeatureConnector.from_config(
          os.fspath(self.data_path))
    else:
      raise shards.DatasetError(
          f"{self.name}/{kind}: no prepared dataset in {self.data_dir} and "
          "no source_dir to prepare one from; pass source_dir= (a jaxface "
          "dataset directory) or use data_pipelines.tfds_jaxface.prepare")
    return tfds.core.DatasetInfo(
        builder=self,
        description=("jaxface records converted to TFDS, field by field.\n\n"
                     + records.schema_description(kind)),
        features=features,
        disable_shuffling=True,  # Keep the jaxface record order.
        metadata=metadata,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    if self._source_dir is None:
      raise shards.DatasetError(
          f"{self.name}/{self.kind}: preparing needs source_dir= (a jaxface "
          "dataset directory)")
    layout = self._source_layout()
    # TFDS cannot write a split without examples; empty ones are left out
    # (and listed in the metadata as "empty_splits").
    return {split: self._generate_examples(split, layout["fields"])
            for split, count in layout["splits"].items() if count}

  def _generate_examples(self, split: str, fields: Sequence[str]
                         ) -> Iterator[tuple[int, dict[str, Any]]]:
    with shards.RecordReader(self._source_dir, self.kind, split) as reader:
      for index in range(len(reader)):
        yield index, record_to_example(
            reader[index], self.kind, fields,
            where=f"{self._source_dir} {self.kind}/{split} record {index}")


def _is_jaxface_dir(path: str) -> bool:
  return os.path.isfile(os.path.join(path, shards.DATASET_INFO))


def prepare(source_dir: str | os.PathLike[str], kind: str,
            data_dir: str | os.PathLike[str], *, overwrite: bool = False
            ) -> JaxfaceRecords:
  """Prepares (kind) of a jaxface dataset as a TFDS dataset in `data_dir`.

  Args:
    source_dir: jaxface dataset directory.
    kind: record kind to convert (one TFDS config per kind).
    data_dir: TFDS data directory; the dataset goes to
      `{data_dir}/jaxface_records/{kind}/1.0.0/`.
    overwrite: replace an existing prepared dataset. Without it, an existing
      one is reused if it was made from the same dataset.json, and refused
      otherwise.

  Returns:
    The prepared builder (`builder.as_data_source(split)` reads it).

  Raises:
    DatasetError: if the source is not a jaxface dataset or has no `kind`.
    StaleDatasetError: if `data_dir` holds this kind prepared from another
      source (or an older version of it) and `overwrite` is False.
  """
  source_dir = os.path.abspath(os.fspath(source_dir))
  data_dir = os.fspath(data_dir)
  shards.read_dataset_info(source_dir)  # Clear errors before TFDS's.
  builder = JaxfaceRecords(source_dir=source_dir, config=kind,
                           data_dir=data_dir)
  if builder.is_prepared():
    if overwrite:
      # The builder restored the old metadata: start afresh.
      shutil.rmtree(os.fspath(builder.data_path))
      builder = JaxfaceRecords(source_dir=source_dir, config=kind,
                               data_dir=data_dir)
    else:
      _check_fresh(builder, source_dir)
      return builder
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
  return builder


def _check_fresh(builder: JaxfaceRecords, source_dir: str) -> None:
  stored = builder.info.metadata.get("source_fingerprint")
  current = source_fingerprint(source_dir)
  if stored != current:
    raise StaleDatasetError(
        f"{builder.data_dir} was prepared from "
        f"{builder.info.metadata.get('source_dir', 'another dataset')} when "
        f"its {shards.DATASET_INFO} had sha-256 {stored}; {source_dir}'s has "
        f"{current}: the source has changed or is another dataset. Prepare "
        "again with overwrite=True, or use another data_dir")


def image_decoders(kind: str, features: tfds.features.FeaturesDict | None = None
                   ) -> dict[str, tfds.decode.Decoder]:
  """Decoders that leave the Image features of `kind` as JPEG bytes."""
  schema = {spec.name: spec for spec in _schema(kind)}
  names = features.keys() if features is not None else schema
  return {name: SkipImageDecoding() for name in names
          if name in schema and schema[name].type in ("jpeg", "jpeg_list")
          and not _is_optional(schema[name])}


def data_source(path: str | os.PathLike[str], kind: str,
                split: str | None = None, *,
                data_dir: str | os.PathLike[str] | None = None,
                decode_images: bool = False) -> Any:
  """Random access to TFDS examples of jaxface records, without TensorFlow.

  Args:
    path: a jaxface dataset directory (prepared first, into `data_dir`, if
      needed) or a TFDS data directory holding a prepared jaxface_records
      dataset.
    kind: record kind (the TFDS config).
    split: split name or TFDS split spec ("train[:10]"); None for
      {split: source} of every split.
    data_dir: where to prepare a jaxface dataset directory `path`; default
      `{path}/tfds`. Ignored when `path` is a TFDS data directory.
    decode_images: decode Image features into uint8 (h, w, 3) RGB arrays;
      by default they stay JPEG bytes (exact, and what
      `example_to_record_bytes` restores records from).

  Returns:
    A TFDS data source (a sequence of example dicts of numpy values), or
    {split: data source}.
  """
  path = os.fspath(path)
  if _is_jaxface_dir(path):
    builder = prepare(path, kind, data_dir if data_dir is not None
                      else os.path.join(path, DEFAULT_SUBDIR))
  else:
    if not os.path.isfile(os.path.join(path, NAME, kind, DATASET_VERSION,
                                       "features.json")):
      raise shards.DatasetError(
          f"{path} is neither a jaxface dataset (no {shards.DATASET_INFO}) "
          f"nor a TFDS data directory with {NAME}/{kind}/{DATASET_VERSION} "
          "prepared in it")
    builder = JaxfaceRecords(config=kind, data_dir=path)
  decoders = (None if decode_images
              else image_decoders(kind, builder.info.features))
  return builder.as_data_source(split=split, decoders=decoders)


def example_to_record_fields(example: Mapping[str, Any], kind: str, *,
                             jpeg_quality: int = records.JPEG_QUALITY
                             ) -> dict[str, Any]:
  """The jaxface record fields of one TFDS example.

  Args:
    example: a dict of numpy values as `tfds.data_source` returns (images as
      JPEG bytes, or as decoded uint8 (h, w, 3) RGB arrays).
    kind: record kind.
    jpeg_quality: quality for re-encoding decoded images (lossy; images that
      are bytes are kept as they are).

  Returns:
    {field: value} as `records.serialize` takes it: arrays of the schema
    dtype, ints, strs, JPEG bytes; optional fields that are None are left
    out. Entries that are not record fields are ignored.
  """
  fields = {}
  for spec in _schema(kind):
    if spec.name not in example:
      continue  # serialize() names missing required fields.
    value = example[spec.name]
    if value is None and _is_optional(spec):
      continue
    if spec.type == "jpeg":
      value = _jpeg_bytes(value, jpeg_quality)
    elif spec.type == "jpeg_list":
      value = [_jpeg_bytes(item, jpeg_quality) for item in value]
    elif spec.type == "array":
      value = np.asarray(value, dtype=np.dtype(spec.dtype))
    elif spec.type == "int":
      value = int(value)
    elif spec.type == "str":
      value = value.decode("utf-8") if isinstance(value, bytes) else str(value)
    fields[spec.name] = value
  return fields


def _jpeg_bytes(value: Any, quality: int) -> Any:
  if isinstance(value, np.ndarray) and value.dtype == np.uint8 and (
      value.ndim == 3):
    return records.encode_jpeg(value, quality)
  if isinstance(value, np.ndarray) and value.ndim == 0:
    value = value[()]
  if isinstance(value, (bytes, np.bytes_)):
    return bytes(value)
  return value  # serialize() reports the type.


def example_to_record_bytes(example: Mapping[str, Any], kind: str, *,
                            where: str = "tfds example",
                            jpeg_quality: int = records.JPEG_QUALITY) -> bytes:
  """A TFDS example as a serialised jaxface record (`records.serialize`).

  With images left as JPEG bytes (the `data_source` default), the bytes equal
  the original record's, so the jaxface decode path reads TFDS sources as it
  reads jaxface shards.

  Raises:
    RecordError: naming `where`, if the example does not make a valid record.
  """
  return records.serialize(
      kind, example_to_record_fields(example, kind, jpeg_quality=jpeg_quality),
      where=where)


class RecordBytesSource:
  """A TFDS data source seen as serialised jaxface records.

  A random-access sequence (grain's data source protocol: `__len__`,
  `__getitem__`) whose item i is `example_to_record_bytes(source[i], kind)`,
  so a pipeline made for `shards.RecordReader.read_bytes` reads TFDS data
  unchanged. Picklable if the wrapped source is (TFDS's ArrayRecord data
  sources are).
  """

  def __init__(self, source: Sequence[Mapping[str, Any]], kind: str):
    _schema(kind)
    self.source = source
    self.kind = kind

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> bytes:
    return example_to_record_bytes(
        self.source[index], self.kind,
        where=f"{NAME}/{self.kind} example {index}")

  def __repr__(self) -> str:
    return f"RecordBytesSource({self.kind!r}, {len(self)} examples)"
