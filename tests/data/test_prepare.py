"""prepare: split CSV + parquets -> shuffled shards + manifest; bad input; interrupted runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.data.conftest import write_kaggle_dir
from tpu_grapheme.data import manifest, prepare, tfrecord
from tpu_grapheme.errors import UserError


@pytest.fixture(scope="module")
def kdir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("kaggle_prep"))
    df, _ = write_kaggle_dir(d, rows=20, files=1, seed=5)
    return d, df


def _ids(out):
    m = json.loads(Path(out, "manifest.json").read_text())
    return m, [i for s in m["shards"] for i in tfrecord.read_ids(os.path.join(out, s["file"]))]


def test_manifest_shards_and_shuffle(kdir, tmp_path):
    d, df = kdir
    m = prepare.prepare(
        os.path.join(d, "train.csv"), str(tmp_path / "a"), shard_mb=0.2, shuffle_seed=1, progress=False
    )
    m2, ids = _ids(tmp_path / "a")
    assert m == m2
    assert m["total"] == 20 and m["schema_version"] == manifest.SCHEMA_VERSION and m["image_format"] == "raw"
    assert [s["count"] for s in m["shards"]] == [5, 5, 5, 5]  # 0.2 MB / ~32.4 KB -> 6 per shard, evened out
    assert all(s["bytes"] == os.path.getsize(tmp_path / "a" / s["file"]) for s in m["shards"])
    assert sorted(os.listdir(tmp_path / "a")) == [
        "000-5.tfrec",
        "001-5.tfrec",
        "002-5.tfrec",
        "003-5.tfrec",
        "manifest.json",
    ]
    assert sorted(ids) == sorted(df["image_id"]) and ids != list(df["image_id"])  # all rows, shuffled
    prepare.prepare(
        os.path.join(d, "train.csv"), str(tmp_path / "b"), shard_mb=0.2, shuffle_seed=1, progress=False
    )
    assert _ids(tmp_path / "b")[1] == ids  # seeded


def test_split_subset_and_pattern(kdir, tmp_path):
    d, df = kdir
    df.iloc[3:9].to_csv(tmp_path / "valid_split_0.csv", index=False)
    pattern = os.path.join(d, "train_image_data_*.parquet")
    m = prepare.prepare(
        str(tmp_path / "valid_split_0.csv"), str(tmp_path / "o"), parquet_pattern=pattern, progress=False
    )
    assert m["total"] == 6 and len(m["shards"]) == 1
    assert sorted(_ids(tmp_path / "o")[1]) == sorted(df["image_id"].iloc[3:9])


def test_missing_ids_named(kdir, tmp_path):
    d, df = kdir
    df.assign(image_id=[f"Other_{i}" for i in range(20)]).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(UserError, match="20 image_id.*Other_0, Other_1, Other_2, ..."):
        prepare.prepare(
            str(tmp_path / "t.csv"),
            str(tmp_path / "o"),
            parquet_pattern=os.path.join(d, "*.parquet"),
            progress=False,
        )
    assert not (tmp_path / "o").exists()


def test_refuses_to_mix_with_old_shards(kdir, tmp_path):
    d, _ = kdir
    out = tmp_path / "o"
    out.mkdir()
    (out / "000-9.tfrec").write_bytes(b"old")
    with pytest.raises(UserError, match="--overwrite"):
        prepare.prepare(os.path.join(d, "train.csv"), str(out), progress=False)


def test_interrupted_run_leaves_no_whole_looking_shard(kdir, tmp_path, monkeypatch):
    d, _ = kdir
    real_write, calls = tfrecord.ShardWriter.write, []

    def flaky(self, record):  # 20 spill writes, then shard 0 (5), then fail inside shard 1
        calls.append(1)
        if len(calls) == 28:
            raise KeyboardInterrupt
        real_write(self, record)

    monkeypatch.setattr(tfrecord.ShardWriter, "write", flaky)
    with pytest.raises(KeyboardInterrupt):
        prepare.prepare(os.path.join(d, "train.csv"), str(tmp_path / "o"), shard_mb=0.2, progress=False)
    assert sorted(os.listdir(tmp_path / "o")) == [
        "000-5.tfrec"
    ]  # complete shard only; no manifest, no partial
    assert len(tfrecord.read_ids(str(tmp_path / "o" / "000-5.tfrec"))) == 5


def test_cli_bad_input_one_line_exit_2(kdir, tmp_path):
    d, _ = kdir
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "tpu_grapheme.data.prepare",
            os.path.join(d, "train.csv"),
            str(tmp_path / "o"),
            "--parquet-pattern",
            str(tmp_path / "none_*.parquet"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2, r.stderr
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert (
        err == [f"error: no parquet files match {tmp_path / 'none_*.parquet'}"]
        and "Traceback" not in r.stderr
    )


def test_cli_writes(kdir, tmp_path):
    d, _ = kdir
    prepare.main(
        [
            os.path.join(d, "train.csv"),
            str(tmp_path / "o"),
            "--quiet",
            "--image-format",
            "png",
            "--shuffle-seed",
            "3",
        ]
    )
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert m["image_format"] == "png" and m["total"] == 20
    assert tfrecord.detect_format(str(tmp_path / "o" / m["shards"][0]["file"])).image_format == "png"
    assert np.isclose(sum(s["count"] for s in m["shards"]), 20)


def test_short_write_of_a_shard_is_caught_by_prepare(kdir, tmp_path, monkeypatch):
    """A shard that lands shorter than its records (a partial upload, a full disk) fails `prepare` itself."""
    d, _ = kdir
    real_close = tfrecord.ShardWriter.close

    def short(self):
        real_close(self)
        if self.path.endswith(".tfrec"):
            with open(self.path, "r+b") as f:
                f.truncate(os.path.getsize(self.path) - 100)

    monkeypatch.setattr(tfrecord.ShardWriter, "close", short)
    out = tmp_path / "o"
    with pytest.raises(UserError, match=r"000-\d+\.tfrec: holds \d+ bytes, \d+ were written \(truncated\)"):
        prepare.prepare(os.path.join(d, "train.csv"), str(out), shard_mb=0.2, progress=False)
    assert not (out / "manifest.json").exists()  # a directory without a manifest is not a finished split
