"""Tests of jaxface.data.shards: ArrayRecord shards, dataset.json, reading."""

from __future__ import annotations

import json
import os
import pickle

from array_record.python import array_record_module
import numpy as np
import pytest

from jaxface.data import records
from jaxface.data import shards


def make_recon(rng, identity):
  return {
      "image": records.encode_jpeg(
          rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), 90),
      "position_map": rng.normal(size=(8, 8, 3)).astype(np.float32),
      "landmarks": rng.normal(size=(68, 3)).astype(np.float32),
      "pose": rng.normal(size=(7,)).astype(np.float32),
      "shape_coeffs": rng.normal(size=(40,)).astype(np.float32),
      "expression_coeffs": rng.normal(size=(10,)).astype(np.float32),
      "face_box": np.array([0, 0, 8, 8], np.float32),
      "crop_transform": np.eye(3, dtype=np.float32),
      "original_size": np.array([8, 8], np.int32),
      "identity": identity,
      "source": "test",
  }


def write_dataset(directory, per_shard=(3, 2), garbage=None, split="train"):
  """Writes recon records with identities 0, 1, ... into shards.

  Args:
    directory: where to write.
    per_shard: records in each shard.
    garbage: (shard, index in shard) of a record replaced by garbage bytes.
    split: the split name.

  Returns:
    (shard file names, serialised records in dataset order).
  """
  rng = np.random.default_rng(0)
  names, data = [], []
  for s, n in enumerate(per_shard):
    name = shards.shard_name("recon", split, s, len(per_shard))
    with shards.ShardWriter(os.path.join(directory, name)) as writer:
      for j in range(n):
        if (s, j) == garbage:
          record = b"\x00garbage, not a record"
        else:
          record = records.serialize("recon", make_recon(rng, len(data)))
        writer.write(record)
        data.append(record)
    names.append(name)
  shards.write_dataset_info(directory, {
      "source": "test", "seed": 0, "resolution": 8,
      "kinds": {"recon": {split: {"count": len(data), "shards": names}}},
      "note": "kept"})
  return names, data


def test_shard_name():
  assert (shards.shard_name("recon", "train", 3, 12)
          == "recon-train.array_record-00003-of-00012")


@pytest.mark.parametrize("args", [("mesh", "train", 0, 1),
                                  ("recon", "tr-ain", 0, 1),
                                  ("recon", "", 0, 1),
                                  ("recon", "train", 2, 2)])
def test_shard_name_rejects(args):
  with pytest.raises(ValueError):
    shards.shard_name(*args)


def test_shard_writer_writes_atomically(tmp_path):
  path = tmp_path / shards.shard_name("clips", "test", 0, 1)
  with shards.ShardWriter(path) as writer:
    for i in range(5):
      writer.write(bytes([i]) * 100)
      # Nothing stands under the final name until the shard is complete.
      assert not path.exists()
    assert writer.count == 5
  assert sorted(os.listdir(tmp_path)) == [path.name]  # No temp files left.
  reader = array_record_module.ArrayRecordReader(str(path))
  assert reader.num_records() == 5
  assert reader.read([3]) == [bytes([3]) * 100]
  assert "group_size:1," in reader.writer_options_string()
  assert "snappy" in reader.writer_options_string()
  reader.close()


def test_shard_writer_leaves_nothing_on_exception(tmp_path):
  path = tmp_path / "recon-train.array_record-00000-of-00001"
  with pytest.raises(KeyError):
    with shards.ShardWriter(path) as writer:
      writer.write(b"one record")
      assert len(os.listdir(tmp_path)) == 1  # The hidden temp file.
      raise KeyError("boom")
  assert os.listdir(tmp_path) == []


def test_shard_writer_abort_keeps_previous_shard(tmp_path):
  path = tmp_path / "recon-train.array_record-00000-of-00001"
  with shards.ShardWriter(path) as writer:
    writer.write(b"old")
  writer = shards.ShardWriter(path)
  writer.write(b"new")
  writer.abort()
  assert os.listdir(tmp_path) == [path.name]
  reader = array_record_module.ArrayRecordReader(str(path))
  assert reader.read([0]) == [b"old"]
  reader.close()


def test_shard_writer_rejects_use_after_close(tmp_path):
  writer = shards.ShardWriter(tmp_path / "x")
  writer.close()
  with pytest.raises(ValueError, match="closed"):
    writer.write(b"late")


def test_shard_writer_rejects_non_bytes(tmp_path):
  with shards.ShardWriter(tmp_path / "x") as writer:
    with pytest.raises(TypeError, match="bytes"):
      writer.write({"not": "serialised"})
    assert writer.count == 0


def test_dataset_info_round_trip(tmp_path):
  info = {"source": "s", "seed": np.int64(3), "resolution": 8, "kinds": {},
          "extra": [1, 2]}
  shards.write_dataset_info(tmp_path, info)
  assert os.listdir(tmp_path) == ["dataset.json"]
  read = shards.read_dataset_info(tmp_path)
  assert read["format"] == "jaxface-records"
  assert read["schema_version"] == records.SCHEMA_VERSION
  assert read["seed"] == 3 and read["extra"] == [1, 2]


def test_reader_reads_across_shards(tmp_path):
  names, data = write_dataset(tmp_path)
  reader = shards.RecordReader(tmp_path, "recon", "train")
  assert len(reader) == 5
  assert reader.shards == names
  assert [reader[i]["identity"] for i in range(5)] == [0, 1, 2, 3, 4]
  assert reader[-1]["identity"] == 4
  assert reader[3]["kind"] == "recon"
  assert reader.read_bytes(4) == data[4]
  assert reader.info["note"] == "kept"
  with pytest.raises(IndexError):
    reader[5]  # pylint: disable=pointless-statement
  reader.close()
  assert reader[0]["identity"] == 0  # Reopens after close().


def test_reader_pickles(tmp_path):
  write_dataset(tmp_path)
  reader = shards.RecordReader(tmp_path, "recon", "train")
  first = reader[0]
  clone = pickle.loads(pickle.dumps(reader))
  assert len(clone) == 5
  np.testing.assert_array_equal(clone[0]["position_map"],
                                first["position_map"])


def test_reader_is_a_grain_source(tmp_path):
  grain = pytest.importorskip("grain")
  write_dataset(tmp_path)
  reader = shards.RecordReader(tmp_path, "recon", "train")
  dataset = grain.MapDataset.source(reader).shuffle(seed=1).map(
      lambda record: record["identity"])
  assert sorted(dataset) == [0, 1, 2, 3, 4]


def test_garbage_record(tmp_path):
  names, _ = write_dataset(tmp_path, per_shard=(3, 4), garbage=(1, 2))
  report = shards.check(tmp_path)
  assert not report["ok"]
  assert report["counts"]["recon"]["train"] == {
      "listed": 7, "records": 7, "checked": 7, "bad": 1}
  assert len(report["problems"]) == 1
  problem = report["problems"][0]
  assert (problem["kind"], problem["split"], problem["index"],
          problem["shard"], problem["shard_index"]) == (
              "recon", "train", 5, names[1], 2)
  assert "corrupted" in problem["error"]

  reader = shards.RecordReader(tmp_path, "recon", "train")
  with pytest.raises(records.RecordError) as info:
    reader[5]  # pylint: disable=pointless-statement
  assert f"{names[1]} record 2" in str(info.value)
  for i in (0, 1, 2, 3, 4, 6):
    assert reader[i]["identity"] == i


def test_check_clean_dataset_and_limit(tmp_path):
  write_dataset(tmp_path)
  report = shards.check(tmp_path)
  assert report["ok"] and report["problems"] == []
  assert report["counts"] == {"recon": {"train": {
      "listed": 5, "records": 5, "checked": 5, "bad": 0}}}
  assert shards.check(tmp_path, limit=2)["counts"]["recon"]["train"][
      "checked"] == 2


def test_check_reports_count_mismatch(tmp_path):
  names, _ = write_dataset(tmp_path)
  info = shards.read_dataset_info(tmp_path)
  info["kinds"]["recon"]["train"]["count"] = 6
  shards.write_dataset_info(tmp_path, info)
  report = shards.check(tmp_path)
  assert [p["index"] for p in report["problems"]] == [None]
  assert "lists 6 records" in report["problems"][0]["error"]
  with pytest.raises(shards.DatasetError, match="lists 6"):
    shards.RecordReader(tmp_path, "recon", "train")
  assert names


def test_check_reports_unreadable_shard(tmp_path):
  names, _ = write_dataset(tmp_path)
  (tmp_path / names[0]).write_bytes(b"not an array record file")
  report = shards.check(tmp_path)
  shard_problems = [p for p in report["problems"] if p["shard"] == names[0]]
  assert len(shard_problems) == 1 and shard_problems[0]["index"] is None
  # The other shard is still checked.
  assert report["counts"]["recon"]["train"]["checked"] == 2


def test_unknown_kind_or_split(tmp_path):
  write_dataset(tmp_path)
  with pytest.raises(shards.DatasetError, match="no 'clips'.*recon: train"):
    shards.RecordReader(tmp_path, "clips", "train")
  with pytest.raises(shards.DatasetError, match="no 'test'.*recon: train"):
    shards.RecordReader(tmp_path, "recon", "test")
  with pytest.raises(shards.DatasetError, match="no 'test'"):
    shards.check(tmp_path, split="test")
  with pytest.raises(shards.DatasetError, match="no 'multiview'"):
    shards.check(tmp_path, kind="multiview")


def test_read_dataset_info_missing_directory(tmp_path):
  with pytest.raises(shards.DatasetError, match="does not exist"):
    shards.read_dataset_info(tmp_path / "nope")


def test_read_dataset_info_missing_file(tmp_path):
  with pytest.raises(shards.DatasetError,
                     match="not a jaxface dataset: no dataset.json"):
    shards.read_dataset_info(tmp_path)
  with pytest.raises(shards.DatasetError, match="no dataset.json"):
    shards.check(tmp_path)


def test_read_dataset_info_bad_json(tmp_path):
  (tmp_path / "dataset.json").write_text('{"format": "jaxface-records",')
  with pytest.raises(shards.DatasetError, match="invalid JSON"):
    shards.read_dataset_info(tmp_path)


def test_read_dataset_info_other_schema_version(tmp_path):
  (tmp_path / "dataset.json").write_text(json.dumps(
      {"format": "jaxface-records", "schema_version": 7, "kinds": {}}))
  with pytest.raises(shards.DatasetError) as info:
    shards.read_dataset_info(tmp_path)
  assert "schema version 7" in str(info.value)
  assert f"schema version {records.SCHEMA_VERSION}" in str(info.value)


def test_read_dataset_info_missing_shard(tmp_path):
  names, _ = write_dataset(tmp_path)
  os.remove(tmp_path / names[1])
  with pytest.raises(shards.DatasetError,
                     match=f"shard {names[1]} is listed.*missing"):
    shards.read_dataset_info(tmp_path)


@pytest.mark.parametrize("kinds", [[], {"mesh": {}},
                                   {"recon": {"train": {"count": 1}}},
                                   {"recon": {"train": {"count": 0,
                                                        "shards": ["../x"]}}}])
def test_read_dataset_info_bad_kinds(tmp_path, kinds):
  (tmp_path / "dataset.json").write_text(json.dumps(
      {"format": "jaxface-records", "schema_version": 1, "kinds": kinds}))
  with pytest.raises(shards.DatasetError, match="dataset.json"):
    shards.read_dataset_info(tmp_path)


def test_read_dataset_info_wrong_format(tmp_path):
  (tmp_path / "dataset.json").write_text(json.dumps(
      {"format": "tfds", "schema_version": 1, "kinds": {}}))
  with pytest.raises(shards.DatasetError, match="format"):
    shards.read_dataset_info(tmp_path)


def test_written_files_get_the_umask_permissions(tmp_path):
  old = os.umask(0o022)
  try:
    path = tmp_path / shards.shard_name("recon", "train", 0, 1)
    with shards.ShardWriter(path) as writer:
      writer.write(b"x")
    info = shards.write_dataset_info(tmp_path, {"kinds": {}})
  finally:
    os.umask(old)
  assert os.stat(path).st_mode & 0o777 == 0o644
  assert os.stat(info).st_mode & 0o777 == 0o644
