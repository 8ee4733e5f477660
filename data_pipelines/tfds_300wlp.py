"""300W-LP from TensorFlow Datasets (`the300w_lp`) into jaxface's converter.

TFDS's `the300w_lp` (tensorflow_datasets/datasets/the300w_lp/
the300w_lp_dataset_builder.py, version 1.0.0, one "train" split of the four
non-flipped subsets AFW, HELEN, IBUG, LFPW) has these features:

  image              Image (450, 450, 3) uint8, JPEG: the 300W-LP photo
  landmarks_origin   float32 (68, 2): the .mat's "pt2d" (transposed) / 450
  landmarks_2d       float32 (68, 2): landmarks/*_pts.mat "pts_2d" / 450
  landmarks_3d       float32 (68, 2): landmarks/*_pts.mat "pts_3d" / 450
  roi                float32 (4,): "roi"
  illum_params       float32 (10,): "Illum_Para"
  color_params       float32 (7,): "Color_Para"
  tex_params         float32 (199,): "Tex_Para"
  shape_params       float32 (199,): "Shape_Para"
  exp_params         float32 (29,): "Exp_Para"
  pose_params        float32 (7,): "Pose_Para" = pitch, yaw, roll (radians),
                     tx, ty, tz, scale

TFDS divides the landmarks by 450 (the side of every 300W-LP image, a
constant, not the image's own size), so they lie in [0, 1]; `example_to_sample`
multiplies them back into pixels.

Names and identities. TFDS keys examples by file name but stores neither it
nor anything else naming the face, and it shuffles the examples. The 300W-LP
converter derives a record's identity from the Sample's name
(`the300wlp.identity_of`: a hash of the name without its trailing `_<view>`).
The views 3DDFA synthesised from one photo keep that photo's fitted
Shape_Para (face profiling changes the pose, not the fitted face), so a
sample is named `the300w_lp-<hash of shape_params>_<index>`: views of one
face get one identity, as from the file names, and `index` (the example's
position in the TFDS split, stable for one prepared copy) keeps names
unique. (Were two views' Shape_Para to differ, each would just get its own
identity.) The Sample's source, stored as the record's, is
`tfds/the300w_lp/<split>/<index>`.

What needs TensorFlow: preparing `the300w_lp` (its generator reads the
.mat files with tf.io.gfile): `pip install -e ".[tf]"`. Reading does not, if
it was prepared in the `array_record` format (as `open_source` prepares it):
then `iter_samples` and `convert` read it through `tfds.data_source`. A copy
prepared as TFRecord (TFDS's default) can only be read with TensorFlow, and
`convert` needs random access, i.e. array_record.

`convert` writes a jaxface `recon` dataset through the 300W-LP converter
(`data_pipelines.the300wlp.convert_sample`). It never holds the dataset in
memory: the work items are example indices, and each worker process opens
the ArrayRecord data source itself and reads, converts and serialises one
example at a time; the parent writes records in index order (as
`writing.write_split` does for every converter). Memory per process is one
example plus the BFM.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import importlib.util
import os
import types
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from jaxface.data import records
from jaxface.data import shards
from jaxface.data import writing

NAME = "the300w_lp"
# TFDS divides all landmark features by this (300W-LP images are 450 x 450).
LANDMARK_SCALE = 450.0
# dataset.json "source" of converted datasets (as the file-based converter's).
DATASET_SOURCE = "300W_LP"

# name -> (shape, dtype) of TFDS's the300w_lp features (see the docstring).
FEATURES = types.MappingProxyType({
    "image": ((450, 450, 3), "uint8"),
    "landmarks_origin": ((68, 2), "float32"),
    "landmarks_2d": ((68, 2), "float32"),
    "landmarks_3d": ((68, 2), "float32"),
    "roi": ((4,), "float32"),
    "illum_params": ((10,), "float32"),
    "color_params": ((7,), "float32"),
    "tex_params": ((199,), "float32"),
    "shape_params": ((199,), "float32"),
    "exp_params": ((29,), "float32"),
    "pose_params": ((7,), "float32"),
})

_TF_MESSAGE = (
    "needs TensorFlow, which is not installed: install jaxface's `tf` extra "
    "with `pip install -e \".[tf]\"` (tensorflow-cpu). Only preparing TFDS's "
    "the300w_lp, or reading a copy prepared as TFRecord, needs it; a copy "
    "prepared in the array_record format is read without TensorFlow.")


def _converter() -> types.ModuleType:
  """jaxface's 300W-LP converter module (imported on use)."""
  # import_module (not `from data_pipelines import ...`) so that a module
  # registered in sys.modules is used as it is.
  return importlib.import_module("data_pipelines.the300wlp")


def has_tensorflow() -> bool:
  """Whether TensorFlow can be imported (without importing it)."""
  return importlib.util.find_spec("tensorflow") is not None


def require_tensorflow(what: str) -> None:
  """Raises ImportError, saying how to install TensorFlow, if it is absent."""
  if not has_tensorflow():
    raise ImportError(f"{what} {_TF_MESSAGE}")


def _array(example: Mapping[str, Any], key: str, index: int) -> np.ndarray:
  """example[key] as float32 of its the300w_lp shape; ValueError otherwise."""
  shape, _ = FEATURES[key]
  if key not in example:
    raise ValueError(f"the300w_lp example {index}: no {key!r} feature; "
                     f"got {sorted(example)}")
  value = np.asarray(example[key], dtype=np.float32)
  if value.size != int(np.prod(shape)):
    raise ValueError(f"the300w_lp example {index}: {key!r} has shape "
                     f"{value.shape}, expected {shape}")
  return value.reshape(shape)


def _image(value: Any, index: int) -> np.ndarray:
  """A uint8 (h, w, 3) RGB image from a decoded array or JPEG bytes."""
  if isinstance(value, np.ndarray) and value.ndim == 0:
    value = value[()]
  if isinstance(value, (bytes, np.bytes_)):
    return records.decode_jpeg(bytes(value),
                               where=f"the300w_lp example {index} image")
  image = np.asarray(value)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"the300w_lp example {index}: image must be uint8 "
                     f"(h, w, 3) RGB or JPEG bytes, got {image.dtype} "
                     f"{image.shape}")
  return np.ascontiguousarray(image)


def face_name(shape_params: np.ndarray) -> str:
  """The name of the face whose fitted Shape_Para is `shape_params` (199,)."""
  data = np.ascontiguousarray(shape_params, dtype=np.float32).tobytes()
  return f"the300w_lp-{hashlib.blake2b(data, digest_size=8).hexdigest()}"


def example_to_sample(example: Mapping[str, Any], index: int, *,
                      split: str = "train") -> Any:
  """One the300w_lp example as a `data_pipelines.the300wlp.Sample`.

  Pure numpy: works on any dict with the300w_lp's feature names (as
  `tfds.data_source` or `tfds.as_numpy` give them).

  Args:
    example: {"image": uint8 (450, 450, 3) RGB or JPEG bytes,
      "landmarks_origin": float32 (68, 2) in [0, 1] (pixels / 450),
      "pose_params": (7,), "shape_params": (199,), "exp_params": (29,), ...};
      other features are ignored.
    index: the example's index in its split.
    split: the TFDS split (spec) it comes from, for the Sample's source.

  Returns:
    Sample(name=f"{face_name(shape_params)}_{index}", image, pose_para (7,)
    float32 as stored (pitch, yaw, roll in radians, tx, ty, tz, scale),
    shape_para (199,), exp_para (29,), pt2d = landmarks_origin * 450 in
    pixels of the image (68, 2) float32 (None if the example has no
    landmarks_origin), source=f"tfds/the300w_lp/{split}/{index}").

  Raises:
    ValueError: naming the example and feature, if a feature is missing or
      has another size.
  """
  the300wlp = _converter()
  if "image" not in example:
    raise ValueError(f"the300w_lp example {index}: no 'image' feature; got "
                     f"{sorted(example)}")
  pt2d = None
  if "landmarks_origin" in example:
    pt2d = _array(example, "landmarks_origin", index) * np.float32(
        LANDMARK_SCALE)
  shape_para = _array(example, "shape_params", index)
  return the300wlp.Sample(
      name=f"{face_name(shape_para)}_{index}",
      image=_image(example["image"], index),
      pose_para=_array(example, "pose_params", index),
      shape_para=shape_para,
      exp_para=_array(example, "exp_params", index),
      pt2d=pt2d,
      source=f"tfds/{NAME}/{split}/{index}",
  )


def _builder(data_dir: str | None, **kwargs) -> Any:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds.builder(NAME, data_dir=data_dir, **kwargs)


def _has_array_record(builder: Any) -> bool:
  formats = [builder.info.file_format,
             *builder.info.alternative_file_formats]
  return any(getattr(f, "value", f) == "array_record" for f in formats)


def _image_decoders(decode_images: bool) -> dict[str, Any] | None:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return None if decode_images else {"image": tfds.decode.SkipDecoding()}


def open_source(data_dir: str | None = None, split: str = "train", *,
                download: bool = True, decode_images: bool = False
                ) -> Sequence[Mapping[str, Any]]:
  """Random access to the300w_lp examples, preparing the dataset if needed.

  Args:
    data_dir: TFDS data directory (default: TFDS's, ~/tensorflow_datasets).
    split: TFDS split spec ("train", "train[:1000]", ...).
    download: download and prepare the300w_lp (in the array_record format)
      if it is not in `data_dir`; this needs TensorFlow.
    decode_images: let TFDS decode the images; by default they stay JPEG
      bytes, which `example_to_sample` decodes as the file-based converter
      reads the .jpg files (`records.decode_jpeg`, EXIF orientation
      ignored).

  Returns:
    A `tfds.data_source` of example dicts.

  Raises:
    ImportError: if preparing is needed and TensorFlow is absent.
    FileNotFoundError: if the dataset is not prepared and `download` is
      False.
    ValueError: if it is prepared only as TFRecord (use `iter_samples`, with
      TensorFlow, or prepare it again in the array_record format).
  """
  builder = _builder(data_dir)
  if not builder.is_prepared():
    if not download:
      raise FileNotFoundError(
          f"{NAME} is not prepared in {builder.data_dir}; prepare it (with "
          "TensorFlow) or pass download=True")
    require_tensorflow(f"Preparing TFDS's {NAME}")
    if importlib.util.find_spec("importlib_resources") is None:
      raise ImportError(
          f"Preparing TFDS's {NAME} needs the importlib_resources package, "
          "which tensorflow-datasets imports but does not declare "
          "(tensorflow/datasets#11212): pip install importlib_resources")
    builder = _builder(data_dir, file_format="array_record")
    builder.download_and_prepare()
  if not _has_array_record(builder):
    raise ValueError(
        f"{NAME} in {builder.data_dir} is prepared as "
        f"{builder.info.file_format}, which has no random access; prepare "
        "it again with file_format='array_record' (e.g. `tfds build "
        f"{NAME} --file_format=array_record`)")
  return builder.as_data_source(split=split,
                                decoders=_image_decoders(decode_images))


def iter_samples(data_dir: str | None = None, split: str = "train", *,
                 download: bool = True) -> Iterator[Any]:
  """The300w_lp examples as converter Samples, in TFDS split order.

  Reads one example at a time. An array_record copy is read without
  TensorFlow; preparing the dataset, or reading a TFRecord copy, needs it
  (`pip install -e ".[tf]"`). The checks run when this is called, not at the
  first `next`.

  Args:
    data_dir: TFDS data directory (default: TFDS's).
    split: TFDS split spec.
    download: prepare the dataset if it is not in `data_dir`.

  Returns:
    An iterator of `data_pipelines.the300wlp.Sample`s (see
    `example_to_sample`).

  Raises:
    ImportError: when TensorFlow is needed and not installed.
    FileNotFoundError: if the dataset is not prepared and `download` is
      False.
  """
  builder = _builder(data_dir)
  if builder.is_prepared() and not _has_array_record(builder):
    require_tensorflow(f"Reading TFDS's {NAME} prepared as "
                       f"{builder.info.file_format}")
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    examples = tfds.as_numpy(builder.as_dataset(
        split=split, shuffle_files=False, decoders=_image_decoders(False)))
  else:
    data = open_source(data_dir, split, download=download)
    examples = (data[index] for index in range(len(data)))
  return (example_to_sample(example, index, split=split)
          for index, example in enumerate(examples))


def _default_bfm_loader(bfm_dir: str) -> Any:
  """`jaxface.face.bfm.cached_bfm`: the BFM, once per process."""
  bfm_lib = importlib.import_module("jaxface.face.bfm")
  return bfm_lib.cached_bfm(bfm_dir)


@functools.lru_cache(maxsize=2)
def _cached_source(data_dir: str | None, split: str
                   ) -> Sequence[Mapping[str, Any]]:
  """One data source per process and (data_dir, split)."""
  return open_source(data_dir, split, download=False)


@dataclasses.dataclass(frozen=True)
class _Make:
  """Picklable `index -> recon record fields` for `writing.write_split`."""
  data_dir: str | None
  split: str
  bfm_dir: str
  resolution: int
  perturb: bool
  seed: int
  bfm_loader: Callable[[str], Any]

  def __call__(self, index: int) -> dict:
    the300wlp = _converter()
    example = _cached_source(self.data_dir, self.split)[index]
    sample = example_to_sample(example, index, split=self.split)
    rng = (the300wlp.sample_rng(self.seed, sample.source) if self.perturb
           else None)
    return the300wlp.convert_sample(sample, self.bfm_loader(self.bfm_dir),
                                    self.resolution, rng)


def convert(data_dir: str | os.PathLike[str] | None,
            bfm_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str],
            resolution: int = 256, workers: int = 1, *,
            split: str = "train", out_split: str = "train",
            shard_size: int = 256, perturb: bool = False, seed: int = 0,
            overwrite: bool = False, progress: bool = True,
            download: bool = True,
            bfm_loader: Callable[[str], Any] | None = None) -> dict:
  """Converts TFDS's the300w_lp into a jaxface `recon` dataset.

  Each example goes through `data_pipelines.the300wlp.convert_sample`, as the
  file-based converter's samples do. Examples it cannot convert are skipped
  and listed in dataset.json ("skipped": {"recon": {split: count}},
  "skipped_samples": [{kind, split, item, reason}], as the file-based
  converter lists them); dataset.json's "uv_layout" is the BFM's
  (`bfm.BFM.uv_layout`). Records come in TFDS split order, the same for any
  `workers`. Memory stays at one example per process (see the module
  docstring).

  Args:
    data_dir: TFDS data directory holding (or to receive) the300w_lp.
    bfm_dir: the folder with face3d's BFM.mat and BFM_UV.mat.
    out_dir: the jaxface dataset directory to write.
    resolution: crop and position map side in pixels.
    workers: processes converting examples (each opens the data source and
      loads the BFM once).
    split: TFDS split spec to convert ("train", or "train[:1000]" for a
      part).
    out_split: the jaxface split to write it as.
    shard_size: records per shard.
    perturb: PRNet's random crop shift and scale (`the300wlp.sample_rng` of
      `seed` and the sample's source); off: deterministic crops.
    seed: seed of the perturbation.
    overwrite: replace an existing dataset in `out_dir`.
    progress: show a progress bar.
    download: prepare the300w_lp first if needed (needs TensorFlow).
    bfm_loader: bfm_dir -> the BFM as convert_sample takes it (picklable
      when workers > 1); default `jaxface.face.bfm.cached_bfm`.

  Returns:
    The dataset.json dict.

  Raises:
    ValueError: if no example could be converted (then no dataset.json is
      written), or an option is invalid.
    FileExistsError: if `out_dir` holds a dataset and not `overwrite`.
    files.FolderInUseError: if another writer is writing `out_dir`.
    writing.Interrupted: on Ctrl-C; nothing of `out_dir` is left.
    ImportError: if the300w_lp must be prepared and TensorFlow is absent.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  if resolution < 1 or workers < 1 or shard_size < 1:
    raise ValueError(f"resolution, workers and shard_size must be >= 1, got "
                     f"{resolution}, {workers} and {shard_size}")
  data_dir = os.fspath(data_dir) if data_dir is not None else None
  bfm_dir = os.path.abspath(os.fspath(bfm_dir))
  out_dir = os.fspath(out_dir)
  loader = bfm_loader or _default_bfm_loader
  bfm = loader(bfm_dir)  # Fails early, naming the files it expects.
  # A stand-in loader (tests) may give an object without a UV layout.
  layout = getattr(bfm, "uv_layout", None)
  layout_info = {"uv_layout": layout().to_json()} if callable(layout) else {}
  count = len(open_source(data_dir, split, download=download))
  with writing.dataset_output(out_dir, overwrite):
    make = _Make(data_dir, split, bfm_dir, int(resolution), bool(perturb),
                 int(seed), loader)
    result = writing.write_split(
        out_dir, "recon", out_split, range(count), make, shard_size=shard_size,
        workers=workers, skip_errors=True, progress=progress)
    skipped = [{"kind": "recon", "split": out_split,
                "item": f"tfds/{NAME}/{split}/{index}", "reason": reason}
               for index, reason in result.skipped]
    if not result.count:
      raise ValueError(
          f"none of the {count} {NAME} examples of {split!r} could be "
          "converted; no dataset.json written. First problems: "
          + "; ".join(f"{s['item']}: {s['reason']}" for s in skipped[:3]))
    info = writing.dataset_info(
        [result], source=DATASET_SOURCE, seed=int(seed),
        resolution=int(resolution), perturb=bool(perturb),
        tfds={"name": NAME, "version": str(_builder(data_dir).version),
              "split": split, "data_dir": data_dir,
              "tfds_version": tfds.__version__},
        skipped={"recon": {out_split: len(skipped)}}, skipped_samples=skipped,
        **layout_info)
    shards.write_dataset_info(out_dir, info)
  return info
