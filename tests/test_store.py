import json
import os

import pandas as pd
import pytest

from bench.record import store


def test_write_json_is_atomic_and_leaves_no_temp(tmp_path):
    path = tmp_path / "c" / "record.json"
    store.write_json(path, {"status": "ok", "x": float("nan")})
    assert json.loads(path.read_text()) == {"status": "ok", "x": None}
    assert [p.name for p in path.parent.iterdir()] == ["record.json"]


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_results_get_the_mode_the_umask_gives(tmp_path, umask, mode):
    # A shared project folder: colleagues read the records as they read any file written there.
    old = os.umask(umask)
    try:
        store.write_json(tmp_path / "record.json", {"status": "ok"})
    finally:
        os.umask(old)
    assert (tmp_path / "record.json").stat().st_mode & 0o777 == mode


def test_failed_write_keeps_previous_file(tmp_path):
    path = tmp_path / "record.json"
    store.write_json(path, {"status": "ok"})

    class Boom:
        def to_parquet(self, f, index):
            f.write(b"partial")
            raise RuntimeError("disk full")

    try:
        store.write_table(path, Boom())
    except RuntimeError:
        pass
    assert json.loads(path.read_text()) == {"status": "ok"}
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_load_tolerates_truncated_record(tmp_path):
    store.write_json(tmp_path / "a" / store.RECORD,
                     {"cell_id": "a", "status": "ok", "timing": {"throughput_img_s": 5.0},
                      "quality": [{"sigma": 0.1, "psnr": 30.0}]})
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / store.RECORD).write_text('{"cell_id": "b", "sta')
    frame = store.load(tmp_path)
    assert list(frame["cell_id"]) == ["a"]
    assert frame["timing.throughput_img_s"].iloc[0] == 5.0
    assert frame["quality[0.1].psnr"].iloc[0] == 30.0
    assert frame.attrs["unreadable"] == [str(tmp_path / "b")]


def test_load_quality_one_row_per_sigma(tmp_path):
    store.write_json(tmp_path / "a" / store.RECORD,
                     {"cell_id": "a", "status": "ok", "quality": [{"sigma": 0.1, "psnr": 30.0},
                                                                  {"sigma": 0.2, "psnr": 27.0}]})
    q = store.load_quality(tmp_path)
    assert isinstance(q, pd.DataFrame) and list(q["sigma"]) == [0.1, 0.2]
