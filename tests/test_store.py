from __future__ import annotations

import csv
import importlib.util
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from diffsteer.runs import store as store_module
from diffsteer.runs.store import ImageRecord, LabelRecord, RunConfigMismatch, RunStore, job_key

WRITER = Path(__file__).parent / "helpers" / "store_writer.py"
CONFIG = {"model": "tiny-sd1", "steps": 4, "mitigations": ["none", "fair-prompt"]}


def noise(seed: int, size: int = 16) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def record(
    key: str, *, mitigation: str = "none", prompt_id: str = "doctor", index: int = 0, **kw
) -> ImageRecord:
    fields = dict(
        key=key,
        mitigation=mitigation,
        prompt_id=prompt_id,
        prompt=f"a photo of a {prompt_id}",
        final_prompt=f"a photo of a {prompt_id}",
        seed=100 + index,
        image_index=index,
        steering={"method": mitigation, "scale": 1.5},
        model="tiny-sd1",
        status="ok",
    )
    fields.update(kw)
    return ImageRecord(**fields)


def pngs(run_dir: Path) -> set[str]:
    return {p.name for p in (run_dir / "images").glob("*.png")}


def test_images_round_trip_and_dedupe(tmp_path: Path) -> None:
    run = tmp_path / "run"
    a, b = noise(1), noise(2)
    with RunStore.open(run, CONFIG) as st:
        st.add_images(
            [
                (record("k-b", mitigation="fair-prompt", truncated=True), b),
                (record("k-a"), a),
                (record("k-drop", index=1, status="dropped", drop_reason="nsfw"), None),
            ]
        )
        got = st.images()
        assert [r.key for r in got] == ["k-b", "k-a", "k-drop"]  # by mitigation, prompt_id, image_index
        by_key = {r.key: r for r in got}
        assert by_key["k-b"].truncated is True and by_key["k-b"].steering == {
            "method": "fair-prompt",
            "scale": 1.5,
        }
        assert by_key["k-drop"].png is None and by_key["k-drop"].drop_reason == "nsfw"
        assert all(r.created_at > 0 for r in got)
        assert [r.key for r in st.images(status="dropped")] == ["k-drop"]
        assert [r.key for r in st.images(mitigation="none", status="ok")] == ["k-a"]

        # The PNG on disk is a normal file that decodes to the exact pixels.
        on_disk = Image.open(run / "images" / by_key["k-a"].png)
        assert np.array_equal(np.asarray(on_disk), np.asarray(a))
        assert np.array_equal(np.asarray(st.load_image(by_key["k-b"])), np.asarray(b))
        with pytest.raises(ValueError, match="no PNG"):
            st.load_image(by_key["k-drop"])

        # A key already stored is ignored: same rows, old image kept.
        st.add_images([(record("k-a", prompt="changed"), noise(99))])
        assert len(st.images()) == 3
        assert st.images(mitigation="none", status="ok")[0].prompt == "a photo of a doctor"
        assert pngs(run) == {by_key["k-a"].png, by_key["k-b"].png}

        # Identical content under two keys is stored once on disk.
        st.add_images([(record("k-c", index=2), noise(1))])
        assert len(pngs(run)) == 2
        assert {r.key: r.png for r in st.images()}["k-c"] == by_key["k-a"].png
        assert st.done_keys() == {"k-a", "k-b", "k-c", "k-drop"}


def test_bad_records_write_nothing(tmp_path: Path) -> None:
    with RunStore.open(tmp_path / "run", CONFIG) as st:
        with pytest.raises(ValueError, match="needs an image"):
            st.add_images([(record("k-1"), noise(1)), (record("k-2"), None)])
        with pytest.raises(ValueError, match="64-bit"):
            st.add_images([(record("k-3", seed=2**64 - 1), noise(3))])
        assert st.done_keys() == set()
        assert pngs(tmp_path / "run") == set()


def test_reopen_resume_force(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with RunStore.open(run, CONFIG) as st:
        st.add_images([(record("k-a"), noise(1))])
    (run / "notes.txt").write_text("mine")

    # Equal config (tuple vs list does not matter): the run resumes.
    with RunStore.open(run, {**CONFIG, "mitigations": ("none", "fair-prompt")}) as st:
        assert st.done_keys() == {"k-a"}

    changed = {**CONFIG, "steps": 8, "guidance": 7.5}
    with pytest.raises(RunConfigMismatch) as info:
        RunStore.open(run, changed)
    message = str(info.value)
    assert "\n" not in message
    assert "steps" in message and "guidance" in message and "model" not in message
    assert "--resume" in message and "--force" in message
    # a command without --resume (sweep, learn) is not told to pass it
    with pytest.raises(RunConfigMismatch) as info:
        RunStore.open(run, changed, resumable=False)
    assert "--resume" not in str(info.value) and "--force" in str(info.value)

    with pytest.raises(ValueError):
        RunStore.open(run, changed, resume=True, force=True)

    with RunStore.open(run, changed, resume=True) as st:
        assert st.done_keys() == {"k-a"}
        assert st.config == changed
    with RunStore.open(run, changed) as st:  # the new config is now the run's config
        assert st.done_keys() == {"k-a"}

    with RunStore.open(run, CONFIG, force=True) as st:
        assert st.done_keys() == set()
        assert st.config == CONFIG
    assert pngs(run) == set()
    assert (run / "notes.txt").read_text() == "mine"


def test_foreign_folder_refused_and_kept(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    (folder / "images").mkdir(parents=True)
    (folder / "holiday.jpg").write_bytes(b"jpeg")
    (folder / "images" / "cat.png").write_bytes(b"png")

    with pytest.raises(RunConfigMismatch, match="--force"):
        RunStore.open(folder, CONFIG)
    assert not (folder / "results.sqlite").exists()

    with RunStore.open(folder, CONFIG, force=True) as st:
        st.add_images([(record("k-a"), noise(1))])
    assert (folder / "holiday.jpg").read_bytes() == b"jpeg"
    assert (folder / "images" / "cat.png").read_bytes() == b"png"

    # Forcing again deletes only the store's own PNG.
    with RunStore.open(folder, CONFIG, force=True):
        pass
    assert pngs(folder) == {"cat.png"}

    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 10)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "results.sqlite").write_bytes((tmp_path / "junk.sqlite").read_bytes())
    with pytest.raises(RunConfigMismatch, match="not a diffsteer run database"):
        RunStore.open(bad, CONFIG)


def test_labels_upsert_and_unlabelled(tmp_path: Path) -> None:
    with RunStore.open(tmp_path / "run", CONFIG) as st:
        st.add_images(
            [
                (record("k-1", index=0), noise(1)),
                (record("k-2", index=1), noise(2)),
                (record("k-3", index=2, status="dropped", drop_reason="nsfw"), None),
            ]
        )
        assert st.unlabelled_keys("clip", ["gender", "skin"]) == ["k-1", "k-2"]

        st.add_labels(
            [
                LabelRecord("k-1", "clip", "gender", "woman", {"man": 0.2, "woman": 0.8}),
                LabelRecord("k-1", "clip", "skin", None, {"light": 0.5, "dark": 0.5}, reason="no face"),
                LabelRecord("k-2", "clip", "gender", "man", {"man": 0.9, "woman": 0.1}),
            ]
        )
        assert st.unlabelled_keys("clip", ["gender", "skin"]) == ["k-2"]
        assert st.unlabelled_keys("clip", ["gender"]) == []
        assert st.unlabelled_keys("vqa", ["gender"]) == ["k-1", "k-2"]

        st.add_labels(
            [LabelRecord("k-2", "clip", "gender", "woman", {"man": 0.3, "woman": 0.7}, reason="rerun")]
        )
        k2 = [lab for lab in st.labels("clip") if lab.key == "k-2"]
        assert [(lab.label, lab.probs, lab.reason) for lab in k2] == [
            ("woman", {"man": 0.3, "woman": 0.7}, "rerun")
        ]
        assert len(st.labels()) == 3
        assert st.labels("vqa") == []

        with pytest.raises(ValueError, match="not in this run"):
            st.add_labels([LabelRecord("k-missing", "clip", "gender", "man", {})])


def _labelled_store(run: Path) -> RunStore:
    st = RunStore.open(run, CONFIG)
    st.add_images(
        [
            (record("k-1", index=0), noise(1)),
            (record("k-2", index=1), noise(2)),
            (record("k-3", index=2, status="dropped", drop_reason="nsfw"), None),
        ]
    )
    st.add_labels(
        [
            LabelRecord("k-1", "clip", "gender", "woman", {"man": 0.2, "woman": 0.8}),
            LabelRecord("k-2", "clip", "gender", "man", {"man": 0.9, "woman": 0.1}),
        ]
    )
    return st


def test_export_parquet(tmp_path: Path) -> None:
    with _labelled_store(tmp_path / "run") as st:
        out = st.export(tmp_path / "out" / "results.parquet")
        table = pq.read_table(out)
        assert table.num_rows == 3
        assert table.column_names[-2:] == ["gender", "gender_probs"]
        rows = {row["key"]: row for row in table.to_pylist()}
        assert rows["k-1"]["gender"] == "woman" and json.loads(rows["k-1"]["gender_probs"])["woman"] == 0.8
        assert rows["k-3"]["gender"] is None and rows["k-3"]["png"] is None
        assert json.loads(rows["k-2"]["steering"]) == {"method": "none", "scale": 1.5}
        assert rows["k-2"]["seed"] == 101 and rows["k-2"]["truncated"] is False

        # A second classifier: label columns get the classifier as prefix.
        st.add_labels([LabelRecord("k-1", "vqa", "gender", "man", {"man": 1.0})])
        cols = pq.read_table(st.export(out)).column_names
        assert cols[-4:] == ["clip:gender", "clip:gender_probs", "vqa:gender", "vqa:gender_probs"]
        with pytest.raises(ValueError, match=r"\.parquet or \.csv"):
            st.export(tmp_path / "results.xlsx")


def test_export_csv(tmp_path: Path) -> None:
    with _labelled_store(tmp_path / "run") as st:
        out = st.export(tmp_path / "results.csv")
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3
    assert list(rows[0])[:3] == ["key", "mitigation", "prompt_id"]
    by_key = {row["key"]: row for row in rows}
    assert by_key["k-2"]["gender"] == "man" and json.loads(by_key["k-2"]["gender_probs"])["man"] == 0.9
    assert by_key["k-3"]["gender"] == "" and by_key["k-3"]["status"] == "dropped"


def test_job_key_is_stable() -> None:
    key = job_key(model="sd1@abc", prompt="a doctor", seed=3, steering={"b": 1, "a": [1, 2]})
    assert key == job_key(steering={"a": (1, 2), "b": 1}, seed=3, prompt="a doctor", model="sd1@abc")
    assert len(key) == 64 and int(key, 16) >= 0
    assert key != job_key(model="sd1@abc", prompt="a doctor", seed=4, steering={"b": 1, "a": [1, 2]})


def test_reopen_sweeps_only_debris_of_killed_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    with RunStore.open(run, CONFIG) as st:
        st.add_images([(record("k-1", index=0), noise(1)), (record("k-2", index=1), noise(2))])
        kept = {r.png for r in st.images()}
    images = run / "images"
    # What a writer killed mid-batch leaves behind: a PNG announced as pending, never committed...
    orphan = "a" * 64 + ".png"
    (images / orphan).write_bytes(b"png of a job that never got its row")
    with sqlite3.connect(run / "results.sqlite") as conn:
        conn.execute("INSERT INTO pending VALUES ('k-3', ?, 0)", (orphan,))
    conn.close()
    # ... and a half-written temp file. Files the store never announced are not touched.
    (images / ".tmp-deadbeef.part").write_bytes(b"half a png")
    (images / ("b" * 64 + ".png")).write_bytes(b"unknown")
    (images / "keep-me.txt").write_text("not ours")

    monkeypatch.setattr(store_module, "_SWEEP_GRACE_S", 0.0)
    with RunStore.open(run, CONFIG) as st:
        assert st.done_keys() == {"k-1", "k-2"}
    assert {p.name for p in images.iterdir()} == {*kept, "b" * 64 + ".png", "keep-me.txt"}

    (images / sorted(kept)[0]).unlink()
    with pytest.warns(RuntimeWarning, match="1 PNG file"), RunStore.open(run, CONFIG):
        pass


def _count_rows(db: Path) -> int:
    try:
        conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return 0  # not created yet


def _load_writer() -> ModuleType:
    """The helper script as a module, for its job plan and renderer (it is not a package module)."""
    spec = importlib.util.spec_from_file_location("store_writer", WRITER)
    writer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(writer)
    return writer


def _run_writer(run: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(WRITER), str(run), *flags]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_sigkill_mid_run_then_resume(tmp_path: Path) -> None:
    writer = _load_writer()
    planned = writer.plan()
    run = tmp_path / "run"
    db = run / "results.sqlite"

    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(run), "--sleep", "0.02"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while _count_rows(db) < 10:
            assert proc.poll() is None, proc.communicate()[1].decode()
            assert time.monotonic() < deadline, "writer made no progress"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    killed_at = _count_rows(db)
    assert 10 <= killed_at < len(planned)

    again = _run_writer(run)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"generated {len(planned) - killed_at}"
    assert _run_writer(run).stdout.strip() == "generated 0"

    with RunStore.open(run, writer.CONFIG) as st:
        stored = st.images()
        assert len(stored) == len(planned) == 40
        assert {r.key for r in stored} == {r.key for r in planned}
        for rec in stored:
            path = run / "images" / rec.png
            with Image.open(path) as im:
                im.verify()
            with Image.open(path) as im:
                im.load()
                assert np.array_equal(np.asarray(im), np.asarray(writer.render(rec)))
    assert pngs(run) == {r.png for r in stored}
    assert all(p.name.startswith(".tmp-") for p in (run / "images").iterdir() if p.suffix != ".png")


def test_sigkill_between_png_and_row_with_nondeterministic_images(tmp_path: Path) -> None:
    run = tmp_path / "run"
    killed = _run_writer(run, "--random-pixels", "--kill-after-png", "12")
    assert killed.returncode == -signal.SIGKILL
    assert _count_rows(run / "results.sqlite") == 11  # the 12th PNG is on disk, its row is not
    assert len(pngs(run)) == 12

    again = _run_writer(run, "--random-pixels")  # job 12 now makes a different PNG
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "generated 29"
    with RunStore.open(run, _load_writer().CONFIG) as st:
        stored = st.images()
    assert len({r.key for r in stored}) == 40
    assert pngs(run) == {r.png for r in stored}  # the killed attempt's PNG is gone
