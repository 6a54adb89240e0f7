"""The embedded default data set: built once per cache key, even when two builders start together."""

from __future__ import annotations

import glob
import os
import threading

from tpu_grapheme.data import synthetic_default


def test_two_builders_at_once_build_once_and_both_get_the_whole_set(tmp_path):
    lines: list[str] = []
    results: list[tuple[str, str]] = []

    def build() -> None:
        results.append(
            synthetic_default.ensure_synthetic(rows=100, seed=3, root=str(tmp_path), log=lines.append)
        )

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and results[0] == results[1]
    assert sum("rendering" in line for line in lines) == 1, lines  # the second waited, then reused it
    out = synthetic_default.cache_dir(rows=100, seed=3, root=str(tmp_path))
    assert os.path.exists(os.path.join(out, "READY"))
    train, valid = results[0]
    assert glob.glob(train) and glob.glob(valid)
    parquets = sorted(os.path.basename(p) for p in glob.glob(os.path.join(out, "kaggle", "*.parquet")))
    assert parquets == ["test_image_data_0.parquet", "train_image_data_0.parquet"]


def test_the_full_default_keeps_kaggles_four_parquets_and_a_small_set_one():
    assert [synthetic_default.parquet_files(n) for n in (40, 3999, 8000, 16000, 200840)] == [1, 1, 2, 4, 4]
