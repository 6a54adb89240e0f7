"""Output paths are checked before work (one line, exit 2) and a failed command leaves no empty dir."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.cli_errors import one_line_error, start_cli
from tests.data.conftest import write_kaggle_dir
from tpu_grapheme.data.out_paths import check_out_dir, check_out_file, removing_new_dirs
from tpu_grapheme.errors import UserError

READ_ONLY = "/sys/tpu_grapheme_out"  # sysfs refuses new files even to root, whom permission bits let through


def _read_only_dir() -> str:
    """A directory no file can be created in, or skip (root ignores chmod; sysfs is not everywhere)."""
    try:
        os.makedirs(READ_ONLY)
    except OSError:
        return READ_ONLY
    os.rmdir(READ_ONLY)
    pytest.skip("no read-only location on this machine")


def test_out_dir_checks(tmp_path):
    a_file = tmp_path / "f"
    a_file.write_text("x")
    check_out_dir(str(tmp_path / "new" / "deeper"), "--out")  # to be made: fine, and nothing is made
    assert not (tmp_path / "new").exists()
    with pytest.raises(UserError, match=rf"^--out {a_file} is a file, not a directory$"):
        check_out_dir(str(a_file), "--out")
    with pytest.raises(UserError, match=rf"^--output-dir runs: {a_file} is a file, not a directory$"):
        check_out_dir(str(a_file / "run"), "--output-dir", value="runs")
    check_out_dir("gs://bucket/never/checked", "--out")  # URIs are left to the write itself


def test_out_file_checks(tmp_path):
    with pytest.raises(UserError, match=r"^--output .* is a directory; give a file name$"):
        check_out_file(str(tmp_path), "--output")
    with pytest.raises(UserError, match=r"^--output directory does not exist: "):
        check_out_file(str(tmp_path / "missing" / "s.csv"), "--output")
    check_out_file(str(tmp_path / "s.csv"), "--output")
    assert os.listdir(tmp_path) == []  # the probe leaves nothing behind


def test_unwritable_locations_are_refused():
    parent = os.path.dirname(_read_only_dir())
    with pytest.raises(UserError, match=rf"^--out {READ_ONLY}/x is not writable \({parent}\): "):
        check_out_dir(os.path.join(READ_ONLY, "x"), "--out")
    with pytest.raises(UserError, match=rf"^--output {parent}/s.csv is not writable \({parent}\): "):
        check_out_file(os.path.join(parent, "s.csv"), "--output")


def test_removing_new_dirs_removes_only_what_it_made_and_only_when_empty(tmp_path):
    (tmp_path / "old").mkdir()
    with pytest.raises(RuntimeError), removing_new_dirs(str(tmp_path / "old" / "a" / "b")):
        os.makedirs(tmp_path / "old" / "a" / "b" / "c")
        raise RuntimeError
    assert os.listdir(tmp_path) == ["old"] and os.listdir(tmp_path / "old") == []
    with pytest.raises(KeyboardInterrupt), removing_new_dirs(str(tmp_path / "kept")):
        os.makedirs(tmp_path / "kept" / "sub")
        (tmp_path / "kept" / "sub" / "file").write_text("work done")
        raise KeyboardInterrupt
    assert (tmp_path / "kept" / "sub" / "file").exists()
    with removing_new_dirs(str(tmp_path / "ok")):  # success: what was made stays
        os.makedirs(tmp_path / "ok")
    assert (tmp_path / "ok").is_dir()


def _bad_parquet(path: str, ids: list[str]) -> None:
    """The CSV's image ids, but no pixel columns: prepare makes its out dir, then fails on the schema."""
    pq.write_table(pa.table({"image_id": ids, "0": list(range(len(ids)))}), path)


def test_clis_refuse_bad_output_paths_and_leave_no_dir(tmp_path):
    """Side by side, through the real CLIs: each fails with one line, exit 2, before reading its input."""
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    kaggle = tmp_path / "kaggle"
    df, _ = write_kaggle_dir(str(kaggle), rows=8, files=1)
    _bad_parquet(str(tmp_path / "bad_0.parquet"), list(df["image_id"]))
    train = ("tpu_grapheme.train", "--arch", "tiny", "--steps", "2")
    cases = {
        "train output dir is a file": (
            (*train, "--output-dir", a_file),
            f"--output-dir {a_file} is a file, not a directory",
        ),
        "train fails after making its run dir": (
            (*train, "--output-dir", tmp_path / "runs", "--train-folder", tmp_path / "no_*.tfrec")
            + ("--valid-folder", tmp_path / "no_*.tfrec"),
            "no_*.tfrec",
        ),
        "prepare fails after making its out dir": (
            ("tpu_grapheme.data.prepare", kaggle / "train.csv", tmp_path / "shards" / "train", "--quiet")
            + ("--parquet-pattern", tmp_path / "bad_*.parquet"),
            "pixel columns",
        ),
        "split out is a file": (
            ("tpu_grapheme.data.split", "--csv", kaggle / "train.csv", "--out", a_file),
            f"--out {a_file} is a file, not a directory",
        ),
    }
    procs = {name: start_cli(*args) for name, (args, _) in cases.items()}
    for name, proc in procs.items():
        error = one_line_error(proc)
        assert cases[name][1] in error, (name, error)
    assert sorted(os.listdir(tmp_path)) == ["a_file", "bad_0.parquet", "kaggle"]  # no dir left behind


def test_in_process_mains_refuse_before_reading(tmp_path, capsys):
    """The same checks through `main()` (no process start): exit 2, one line, nothing read or made."""
    from tpu_grapheme import train
    from tpu_grapheme.data import prepare

    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    cases = [
        (
            train.main,
            ["--output-dir", str(a_file / "runs")],
            f"--output-dir {a_file / 'runs'}: {a_file} is a file, not a directory",
        ),
        (
            prepare.main,
            ["missing.csv", str(a_file), "--quiet"],
            f"OUT_DIR {a_file} is a file, not a directory",
        ),
    ]
    for main, argv, want in cases:
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and err == f"error: {want}", err
    assert os.listdir(tmp_path) == ["a_file"]
