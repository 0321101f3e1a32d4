"""The run store of an audit: one SQLite database and a folder of content-addressed PNGs per run.

Layout of a run folder::

    RUN_DIR/results.sqlite        tables meta (schema version, config), images (one row per job),
                                  labels (one row per image x classifier x axis)
    RUN_DIR/images/<sha256>.png   each distinct PNG once, named by the hash of its bytes

Why this shape: audits run for hours on a GPU and get killed. Each finished job is one row, written
only after its PNG is durably on disk, so a run killed at any instant (SIGKILL included) and started
again regenerates only the jobs that have no row, and never ends with a row whose PNG is missing or
half written. PNG names are recorded in a ``pending`` table before the files are written, so the PNG
of a job killed before its row was committed is deleted once that job is finished again, even when
the new image differs (non-deterministic GPU kernels). Everything stays readable without this
package (plain SQLite and PNG).

One process writes a run at a time, enforced by an advisory lock on ``RUN_DIR/.diffsteer.lock`` that
holds the writer's PID; reads from other processes are safe (WAL journal). A writer that reopens a run
checks every stored PNG against its name (the hash of its bytes) and forgets the rows of missing or
damaged ones, so they are made again instead of stranding the run.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import os
import re
import sqlite3
import threading
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from diffsteer.runs.atomic import atomic_write_bytes, fsync_dir

__all__ = [
    "DB_NAME",
    "IMAGES_DIR",
    "LOCK_NAME",
    "ImageRecord",
    "LabelRecord",
    "RunConfigMismatch",
    "RunFolderLock",
    "RunInUseError",
    "RunStore",
    "check_out_dir",
    "job_key",
]

DB_NAME = "results.sqlite"
IMAGES_DIR = "images"
LOCK_NAME = ".diffsteer.lock"
SCHEMA_VERSION = 1

_DB_SIDE_FILES = ("-wal", "-shm", "-journal")
_TMP_PREFIX = ".tmp-"
_PNG_NAME = re.compile(r"[0-9a-f]{64}\.png")
# Temp files and pending PNGs of jobs still unfinished are swept only when older than this: a younger
# one may belong to a write that is about to commit.
_SWEEP_GRACE_S = 300.0
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_STATUSES = ("ok", "dropped")
_CHUNK = 500  # bound on SQL parameters per IN (...) query

_SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE images (
    key TEXT PRIMARY KEY,
    mitigation TEXT NOT NULL,
    prompt_id TEXT NOT NULL,
    prompt TEXT NOT NULL,
    final_prompt TEXT NOT NULL,
    seed INTEGER NOT NULL,
    image_index INTEGER NOT NULL,
    steering TEXT NOT NULL,
    model TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'dropped')),
    drop_reason TEXT,
    truncated INTEGER NOT NULL,
    png TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX images_order ON images (mitigation, prompt_id, image_index);
CREATE TABLE labels (
    key TEXT NOT NULL,
    classifier TEXT NOT NULL,
    axis TEXT NOT NULL,
    label TEXT,
    probs TEXT NOT NULL,
    reason TEXT,
    PRIMARY KEY (key, classifier, axis)
);
CREATE TABLE pending (
    key TEXT NOT NULL,
    png TEXT NOT NULL,
    started_at REAL NOT NULL,
    PRIMARY KEY (key, png)
);
"""

_IMAGE_COLUMNS = (
    "key, mitigation, prompt_id, prompt, final_prompt, seed, image_index, steering, model, status, "
    "drop_reason, truncated, png, created_at"
)


class RunConfigMismatch(RuntimeError):
    """The run folder holds results that the requested config may not silently reuse or delete.
    ``stored`` and ``differing``: the folder's config and the keys it differs in, when it has one."""

    def __init__(
        self, message: str, stored: dict[str, Any] | None = None, differing: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.stored = stored
        self.differing = differing


class RunInUseError(RuntimeError):
    """Another process holds the run folder's writer lock."""


class RunFolderLock:
    """An advisory, exclusive lock on one run folder, released when the holder closes or dies.

    ``flock`` is tied to the open file, so a SIGKILLed holder never leaves a stale lock behind; the
    file keeps the holder's PID only to name it in the error of the process that was refused.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no lock, as before
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise RunInUseError(
                f"{self.path.parent} is in use by another diffsteer process (PID {holder}); wait for it to "
                "finish (or stop it), or choose another --out"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file drops the flock
            self._fd = None

    def __enter__(self) -> RunFolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass
class ImageRecord:
    """One finished job: the image (or why it was dropped) and everything needed to reproduce it."""

    key: str
    mitigation: str
    prompt_id: str
    prompt: str
    final_prompt: str
    seed: int
    image_index: int
    steering: dict[str, Any]
    model: str
    status: str
    drop_reason: str | None = None
    truncated: bool = False
    png: str | None = None
    created_at: float = 0


@dataclass
class LabelRecord:
    """A classifier's verdict on one axis of one image; ``label`` None means it abstained."""

    key: str
    classifier: str
    axis: str
    label: str | None
    probs: dict[str, float] = field(default_factory=dict)
    reason: str | None = None


def job_key(**parts: Any) -> str:
    """A stable id of a job: sha256 of its parameters as sorted, compact JSON.

    Pass every parameter that changes the image (model fingerprint, prompt, steering, seed, steps,
    guidance, size ...): two jobs share a key exactly when they would make the same image, which is
    what lets a resumed run skip finished work. Note ``7`` and ``7.0`` serialise differently.
    """
    if not parts:
        raise ValueError("job_key needs at least one part")
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _normalise_config(config: dict[str, Any]) -> dict[str, Any]:
    """Round-trip through JSON so that a config compares equal to its stored copy (tuples -> lists)."""
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    try:
        return json.loads(json.dumps(config, sort_keys=True, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"config must be JSON-serialisable: {exc}") from None


def _diff_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths of the keys whose values differ between two JSON objects."""
    missing = object()
    out: list[str] = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name, missing), new.get(name, missing)
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(_diff_keys(a, b, f"{prefix}{name}."))
        elif a != b:
            out.append(f"{prefix}{name}")
    return out


def _is_store_file(name: str) -> bool:
    return bool(_PNG_NAME.fullmatch(name)) or name.startswith(_TMP_PREFIX)


def _remove_db_files(db_path: Path) -> None:
    """Delete the database first, then its journals: a stale WAL must never meet a fresh database."""
    for suffix in ("", *_DB_SIDE_FILES):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{db_path}{suffix}").unlink()


def _wipe(run_dir: Path) -> None:
    """Delete what the store created (database, its journals, hash-named PNGs) and nothing else."""
    if not run_dir.is_dir():
        return
    _remove_db_files(run_dir / DB_NAME)
    images = run_dir / IMAGES_DIR
    if images.is_dir():
        for entry in os.scandir(images):
            if entry.is_file(follow_symlinks=False) and _is_store_file(entry.name):
                os.unlink(entry.path)
        with contextlib.suppress(OSError):
            images.rmdir()  # only succeeds when no foreign file is left


def _encode_png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


class _Connection(sqlite3.Connection):
    """A connection that remembers whether opening it replaced the run's stored config."""

    config_was_replaced = False


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _record_from_row(row: Sequence[Any]) -> ImageRecord:
    (key, mitigation, prompt_id, prompt, final_prompt, seed, index, steering, model, status, reason,
     truncated, png, created_at) = row  # fmt: skip
    return ImageRecord(
        key=key,
        mitigation=mitigation,
        prompt_id=prompt_id,
        prompt=prompt,
        final_prompt=final_prompt,
        seed=seed,
        image_index=index,
        steering=json.loads(steering),
        model=model,
        status=status,
        drop_reason=reason,
        truncated=bool(truncated),
        png=png,
        created_at=created_at,
    )


class RunStore:
    """Results of one audit run; open it with :meth:`RunStore.open`. Safe to share between threads."""

    def __init__(self, run_dir: Path, conn: sqlite3.Connection, config: dict[str, Any]) -> None:
        self.run_dir = run_dir
        self.path = run_dir / DB_NAME
        self.images_dir = run_dir / IMAGES_DIR
        self._conn: sqlite3.Connection | None = conn
        self._config = config
        self._lock = threading.RLock()
        self._writer_lock: RunFolderLock | None = None
        self.created = False  # this open made the database (a fresh run)
        self.made_dir = False  # ... and the run folder itself
        self.config_changed = False  # this open replaced the stored config (resume under a new one)

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        run_dir: Path | str,
        config: dict[str, Any],
        *,
        resume: bool = False,
        force: bool = False,
        writer: bool = True,
        resumable: bool = True,
    ) -> RunStore:
        """Create a run, or reopen it so that finished jobs are not redone.

        A run made with an equal config reopens as is. A different config raises
        :class:`RunConfigMismatch` unless ``resume`` (keep every row, store the new config) or
        ``force`` (delete the run's database and images, start fresh; ``force`` starts fresh even when
        the config is equal). A folder holding other files but no database is refused unless
        ``force``; files the store did not create are never deleted.

        ``writer`` (the default) takes the folder's lock first, so a second writer gets
        :class:`RunInUseError` and ``force`` never deletes a run another process holds, and re-checks
        every stored PNG so that missing or damaged ones are made again.

        ``resumable``: whether the caller's command offers ``--resume``; a refusal names it only then.
        """
        if resume and force:
            raise ValueError("resume and force exclude each other: resume keeps results, force deletes them")
        run_dir = Path(run_dir)
        wanted = _normalise_config(config)
        if run_dir.exists() and not run_dir.is_dir():
            raise NotADirectoryError(f"run folder {run_dir} is a file")
        db_path = run_dir / DB_NAME
        if (
            not force
            and run_dir.is_dir()
            and not db_path.exists()
            and any(entry.name != LOCK_NAME for entry in run_dir.iterdir())
        ):
            raise RunConfigMismatch(
                f"{run_dir} holds other files but no {DB_NAME}; choose an empty folder or pass --force "
                "(only the store's own files would be deleted)"
            )
        made_dir = not run_dir.exists()
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = RunFolderLock(run_dir)
        if writer:
            lock.acquire()
        try:
            if force:
                _wipe(run_dir)
            created = not db_path.exists()
            if created:
                _remove_db_files(db_path)  # journals left behind by an earlier, deleted database
            conn = cls._connect(db_path, run_dir, wanted, resume, resumable)
        except BaseException:
            lock.release()
            raise
        store = cls(run_dir, conn, wanted)
        store._writer_lock = lock
        store.created = created
        store.made_dir = made_dir and created
        store.config_changed = not created and conn.config_was_replaced  # type: ignore[attr-defined]
        try:
            (run_dir / IMAGES_DIR).mkdir(exist_ok=True)
            store._sweep(repair=writer)
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def _connect(
        cls, db_path: Path, run_dir: Path, wanted: dict[str, Any], resume: bool, resumable: bool = True
    ) -> sqlite3.Connection:
        """Open (or create) the database and reconcile its stored config with ``wanted``."""
        conn = sqlite3.connect(
            db_path, timeout=30.0, isolation_level=None, check_same_thread=False, factory=_Connection
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            stored = cls._init_schema(conn, db_path, wanted)
            if stored is not None and stored != wanted:
                if not resume:
                    differing = _diff_keys(stored, wanted)
                    shown = ", ".join(differing[:10]) + (", ..." if len(differing) > 10 else "")
                    remedy = (
                        "pass --resume to keep its results under the new config or --force to delete "
                        "them and start over"
                        if resumable
                        else "choose another folder, or pass --force to delete its results and start over"
                    )
                    raise RunConfigMismatch(
                        f"{run_dir} was made with a different config (differs in: {shown}); {remedy}",
                        stored=stored,
                        differing=differing,
                    )
                conn.execute(
                    "UPDATE meta SET value = ? WHERE name = 'config'", (json.dumps(wanted, sort_keys=True),)
                )
                conn.config_was_replaced = True
        except sqlite3.OperationalError:
            conn.close()
            raise
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise RunConfigMismatch(
                f"{db_path} is not a diffsteer run database ({exc}); pass --force to replace it"
            ) from None
        except BaseException:
            conn.close()
            raise
        return conn

    @classmethod
    def open_existing(cls, run_dir: Path | str) -> RunStore:
        """Reopen a finished or interrupted run under the config it was made with (for export, reports)."""
        db_path = Path(run_dir) / DB_NAME
        if not db_path.is_file():
            raise FileNotFoundError(f"no diffsteer run in {run_dir} (missing {DB_NAME})")
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as conn:
            try:
                row = conn.execute("SELECT value FROM meta WHERE name = 'config'").fetchone()
            except sqlite3.DatabaseError:
                row = None
        if row is None:
            raise RunConfigMismatch(f"{db_path} is not a diffsteer run database")
        return cls.open(run_dir, json.loads(row[0]), writer=False)

    @staticmethod
    def _init_schema(
        conn: sqlite3.Connection, db_path: Path, config: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Create the schema in an empty database (returns None) or return the stored config."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not tables:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.executemany(
                    "INSERT INTO meta (name, value) VALUES (?, ?)",
                    [("schema_version", str(SCHEMA_VERSION)), ("config", json.dumps(config, sort_keys=True))],
                )
                conn.execute("COMMIT")
                return None
            meta = dict(conn.execute("SELECT name, value FROM meta")) if "meta" in tables else {}
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if "schema_version" not in meta or "config" not in meta:
            raise RunConfigMismatch(f"{db_path} is not a diffsteer run database; pass --force to replace it")
        version = int(meta["schema_version"])
        if version > SCHEMA_VERSION:
            raise RunConfigMismatch(
                f"{db_path} has schema version {version}, newer than this diffsteer ({SCHEMA_VERSION}); "
                "upgrade diffsteer or pass --force to start over"
            )
        return json.loads(meta["config"])

    def _sweep(self, repair: bool = False) -> None:
        """Tidy up after a killed run: PNGs written for rows never committed, stale temp files.

        ``repair``: forget the rows of missing or damaged PNGs (they are made again); otherwise (a
        reader) warn when rows point at PNG files that are gone.
        """
        cutoff = time.time() - _SWEEP_GRACE_S
        with self._lock:
            with self._tx() as db:
                stale = db.execute(
                    "SELECT key, png FROM pending WHERE key IN (SELECT key FROM images) OR started_at < ?",
                    (cutoff,),
                ).fetchall()
                self._settle_pending(stale)
            present: set[str] = set()
            for entry in os.scandir(self.images_dir):
                if not entry.is_file(follow_symlinks=False):
                    continue
                if _PNG_NAME.fullmatch(entry.name):
                    present.add(entry.name)
                elif entry.name.startswith(_TMP_PREFIX) and entry.stat().st_mtime < cutoff:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
            referenced = {row[0] for row in self._db.execute("SELECT png FROM images WHERE png IS NOT NULL")}
            if repair:
                damaged = {name for name in referenced & present if not self._png_intact(name)}
                self._forget_pngs((referenced - present) | damaged)
                return
        lost = referenced - present
        if lost:
            warnings.warn(
                f"{len(lost)} PNG file(s) referenced by {self.path} are missing from {self.images_dir}",
                RuntimeWarning,
                stacklevel=3,
            )

    def _png_intact(self, name: str) -> bool:
        """A stored PNG is intact when its bytes still hash to its name (what was written, fsynced)."""
        digest = hashlib.sha256()
        try:
            with open(self.images_dir / name, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
        except OSError:
            return False
        return digest.hexdigest() + ".png" == name

    def _forget_pngs(self, names: set[str]) -> None:
        """Delete damaged PNGs and the rows (and labels) of their jobs, so a resumed run remakes them."""
        if not names:
            return
        ordered = sorted(names)
        with self._tx() as db:
            keys: list[str] = []
            for chunk in _chunks(ordered):
                marks = ",".join("?" * len(chunk))
                keys += [
                    row[0] for row in db.execute(f"SELECT key FROM images WHERE png IN ({marks})", chunk)
                ]
            for chunk in _chunks(keys):
                marks = ",".join("?" * len(chunk))
                db.execute(f"DELETE FROM labels WHERE key IN ({marks})", chunk)
                db.execute(f"DELETE FROM images WHERE key IN ({marks})", chunk)
            for name in ordered:  # a damaged file would block the rewrite of the same name
                with contextlib.suppress(FileNotFoundError):
                    (self.images_dir / name).unlink()
        warnings.warn(
            f"{len(names)} PNG file(s) referenced by {self.path} were missing from {self.images_dir} or "
            f"damaged; their {len(keys)} job(s) will be made again",
            RuntimeWarning,
            stacklevel=4,
        )

    def _settle_pending(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Forget finished pending writes and delete their PNGs that no row or other write needs.

        Runs inside a transaction; files go before the commit, so a crash here only leaves pending
        rows whose file is already gone, and they are settled again on the next open.
        """
        if not pairs:
            return
        db = self._db
        db.executemany("DELETE FROM pending WHERE key = ? AND png = ?", pairs)
        names = sorted({png for _, png in pairs})
        needed: set[str] = set()
        for chunk in _chunks(names):
            marks = ",".join("?" * len(chunk))
            needed.update(
                row[0]
                for row in db.execute(
                    f"SELECT png FROM images WHERE png IN ({marks}) "
                    f"UNION SELECT png FROM pending WHERE png IN ({marks})",
                    [*chunk, *chunk],
                )
            )
        for name in names:
            if name not in needed:
                with contextlib.suppress(FileNotFoundError):
                    (self.images_dir / name).unlink()

    # ------------------------------------------------------------------ plumbing

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"run store {self.run_dir} is closed")
        return self._conn

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @property
    def config(self) -> dict[str, Any]:
        """The run's config as stored (a copy: editing it changes nothing)."""
        return json.loads(json.dumps(self._config))

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            if self._writer_lock is not None:
                self._writer_lock.release()
                self._writer_lock = None

    def discard_if_unused(self) -> bool:
        """Close, and delete the run again when this open created it and no job was stored yet.

        For a start that failed before any work: the corrected command then finds no database that
        pins the failed config. Returns whether the run was deleted.
        """
        with self._lock:
            unused = self.created and self._conn is not None and not self.done_keys()
            lock = self._writer_lock
            self._writer_lock = None  # keep the lock while deleting
            self.close()
            try:
                if unused:
                    _wipe(self.run_dir)
                    if self.made_dir:
                        with contextlib.suppress(OSError):
                            (self.run_dir / LOCK_NAME).unlink()
                            self.run_dir.rmdir()
            finally:
                if lock is not None:
                    lock.release()
        return unused

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RunStore({str(self.run_dir)!r})"

    # ------------------------------------------------------------------ images

    def done_keys(self) -> set[str]:
        """Keys of every stored job, ok or dropped: what a resumed run must skip."""
        with self._lock:
            return {row[0] for row in self._db.execute("SELECT key FROM images")}

    def add_images(self, items: Sequence[tuple[ImageRecord, Image.Image | None]]) -> None:
        """Store finished jobs: PNGs first (atomic, fsynced), then all rows in one transaction.

        A key already stored (or repeated in ``items``) is ignored, first one wins. ``ok`` records need
        an image; ``dropped`` ones may pass None. The passed records are not modified; read them back
        with :meth:`images` to see ``png`` and ``created_at``.
        """
        prepared: list[tuple[ImageRecord, str, bytes | None, str | None]] = []
        for record, image in items:
            steering = self._check_record(record, image)
            data = None if image is None else _encode_png(image)
            name = None if data is None else hashlib.sha256(data).hexdigest() + ".png"
            prepared.append((record, steering, data, name))
        if not prepared:
            return
        with self._lock:
            batch_keys = sorted({record.key for record, *_ in prepared})
            seen = self._existing_keys(batch_keys)
            todo = []
            for entry in prepared:
                if entry[0].key not in seen:
                    seen.add(entry[0].key)
                    todo.append(entry)
            if not todo:
                return
            now = time.time()
            writes = [(record.key, name, now) for record, _, _, name in todo if name is not None]
            if writes:
                with self._tx() as db:
                    db.executemany(
                        "INSERT OR IGNORE INTO pending (key, png, started_at) VALUES (?, ?, ?)", writes
                    )
                wrote = False
                for _, _, data, name in todo:
                    if data is not None and name is not None:
                        wrote = self._write_png(name, data) or wrote
                if wrote:
                    fsync_dir(self.images_dir)
            rows = [
                (record.key, record.mitigation, record.prompt_id, record.prompt, record.final_prompt,
                 record.seed, record.image_index, steering, record.model, record.status,
                 record.drop_reason, int(bool(record.truncated)), name, now)
                for record, steering, _, name in todo
            ]  # fmt: skip
            with self._tx() as db:
                db.executemany(
                    f"INSERT OR IGNORE INTO images ({_IMAGE_COLUMNS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                # Every job in the batch is now finished: earlier, killed attempts at it leave no PNG.
                finished: list[tuple[str, str]] = []
                for chunk in _chunks(batch_keys):
                    marks = ",".join("?" * len(chunk))
                    finished += db.execute(
                        f"SELECT key, png FROM pending WHERE key IN ({marks})", chunk
                    ).fetchall()
                self._settle_pending(finished)

    @staticmethod
    def _check_record(record: ImageRecord, image: Image.Image | None) -> str:
        """Reject a bad record before anything is written; returns its steering as JSON text."""
        if not isinstance(record, ImageRecord):
            raise TypeError(f"expected ImageRecord, got {type(record).__name__}")
        if not isinstance(record.key, str) or not record.key:
            raise ValueError("ImageRecord.key must be a non-empty string")
        if record.status not in _STATUSES:
            raise ValueError(f"image {record.key}: status must be 'ok' or 'dropped', got {record.status!r}")
        if record.status == "ok" and image is None:
            raise ValueError(f"image {record.key}: status 'ok' needs an image")
        if image is not None and not isinstance(image, Image.Image):
            raise TypeError(f"image {record.key}: expected a PIL image, got {type(image).__name__}")
        for name in ("seed", "image_index"):
            value = getattr(record, name)
            if isinstance(value, bool) or not isinstance(value, int) or not _INT64_MIN <= value <= _INT64_MAX:
                raise ValueError(f"image {record.key}: {name} must be a 64-bit signed int, got {value!r}")
        try:
            return json.dumps(record.steering, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"image {record.key}: steering is not JSON-serialisable: {exc}") from None

    def _existing_keys(self, keys: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for chunk in _chunks(keys):
            marks = ",".join("?" * len(chunk))
            found.update(
                row[0] for row in self._db.execute(f"SELECT key FROM images WHERE key IN ({marks})", chunk)
            )
        return found

    def _write_png(self, name: str, data: bytes) -> bool:
        """Write a PNG under its hash name so no reader sees a partial file; False if it existed."""
        target = self.images_dir / name
        if target.exists():
            return False
        # a leftover temporary file carries the store's prefix, so the next writer sweeps it up
        atomic_write_bytes(target, data, tmp_name=f"{_TMP_PREFIX}{uuid.uuid4().hex}.part", sync_dir=False)
        return True

    def images(self, *, mitigation: str | None = None, status: str | None = None) -> list[ImageRecord]:
        """Stored jobs, ordered by mitigation, prompt_id, image_index."""
        where, params = [], []
        if mitigation is not None:
            where.append("mitigation = ?")
            params.append(mitigation)
        if status is not None:
            where.append("status = ?")
            params.append(status)
        sql = f"SELECT {_IMAGE_COLUMNS} FROM images"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY mitigation, prompt_id, image_index, key"
        with self._lock:
            return [_record_from_row(row) for row in self._db.execute(sql, params)]

    def load_image(self, record: ImageRecord) -> Image.Image:
        """Decode a stored image fully (the file is closed on return)."""
        if record.png is None:
            raise ValueError(f"image {record.key} has no PNG (status {record.status!r})")
        if not _PNG_NAME.fullmatch(record.png):
            raise ValueError(f"image {record.key}: {record.png!r} is not a store PNG name")
        path = self.images_dir / record.png
        try:
            with Image.open(path) as image:
                image.load()
                return image
        except (OSError, SyntaxError) as exc:  # PIL raises SyntaxError for some malformed chunks
            raise ValueError(
                f"stored image {path} is missing or damaged ({type(exc).__name__}); run the same "
                "`diffsteer audit` command again to make it anew"
            ) from None

    # ------------------------------------------------------------------ labels

    def add_labels(self, labels: Sequence[LabelRecord]) -> None:
        """Store classifier verdicts; a later label for the same (key, classifier, axis) replaces it."""
        rows: list[tuple[Any, ...]] = []
        for lab in labels:
            if not isinstance(lab, LabelRecord):
                raise TypeError(f"expected LabelRecord, got {type(lab).__name__}")
            if lab.label is not None and not isinstance(lab.label, str):
                raise ValueError(f"label of {lab.key}/{lab.axis} must be a string or None, got {lab.label!r}")
            try:
                probs = json.dumps(
                    {str(k): float(v) for k, v in lab.probs.items()}, sort_keys=True, allow_nan=False
                )
            except (TypeError, ValueError, AttributeError) as exc:
                raise ValueError(
                    f"probs of {lab.key}/{lab.axis} must map names to finite floats: {exc}"
                ) from None
            rows.append((lab.key, lab.classifier, lab.axis, lab.label, probs, lab.reason))
        if not rows:
            return
        with self._lock:
            keys = sorted({row[0] for row in rows})
            unknown = sorted(set(keys) - self._existing_keys(keys))
            if unknown:
                shown = ", ".join(unknown[:3]) + (", ..." if len(unknown) > 3 else "")
                raise ValueError(f"labels for {len(unknown)} image key(s) not in this run: {shown}")
            with self._tx() as db:
                db.executemany(
                    "INSERT INTO labels (key, classifier, axis, label, probs, reason) "
                    "VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (key, classifier, axis) DO UPDATE SET "
                    "label = excluded.label, probs = excluded.probs, reason = excluded.reason",
                    rows,
                )

    def labels(self, classifier: str | None = None) -> list[LabelRecord]:
        """Stored labels, ordered by key, classifier, axis."""
        sql = "SELECT key, classifier, axis, label, probs, reason FROM labels"
        params: list[str] = []
        if classifier is not None:
            sql += " WHERE classifier = ?"
            params.append(classifier)
        sql += " ORDER BY key, classifier, axis"
        with self._lock:
            return [
                LabelRecord(key=k, classifier=c, axis=a, label=lab, probs=json.loads(p), reason=r)
                for k, c, a, lab, p, r in self._db.execute(sql, params)
            ]

    def unlabelled_keys(self, classifier: str, axes: Sequence[str]) -> list[str]:
        """Keys of ok images lacking a label row from ``classifier`` for any of ``axes``.

        An abstention (label None) counts as labelled: the classifier has seen the image.
        """
        wanted = list(dict.fromkeys(axes))
        if not wanted:
            return []
        marks = ",".join("?" * len(wanted))
        sql = (
            "SELECT i.key FROM images AS i WHERE i.status = 'ok' AND "
            "(SELECT COUNT(*) FROM labels AS l WHERE l.key = i.key AND l.classifier = ? "
            f"AND l.axis IN ({marks})) < ? "
            "ORDER BY i.mitigation, i.prompt_id, i.image_index, i.key"
        )
        with self._lock:
            return [row[0] for row in self._db.execute(sql, [classifier, *wanted, len(wanted)])]

    # ------------------------------------------------------------------ export

    def export(self, path: Path | str) -> Path:
        """Write one row per image to ``.parquet`` or ``.csv`` (chosen by suffix); returns the path.

        Columns: the :class:`ImageRecord` fields in order (``steering`` as JSON text), then for each
        (classifier, axis) pair seen, sorted, a label column ``<axis>`` and a JSON column
        ``<axis>_probs``; both are empty when the image has no such label. When labels come from
        several classifiers, or an axis name clashes with another column, the names become
        ``<classifier>:<axis>`` and ``<classifier>:<axis>_probs``. The file is replaced atomically.
        """
        path = Path(path)
        kind = path.suffix.lower()
        if kind not in (".parquet", ".csv"):
            raise ValueError(f"export path must end in .parquet or .csv, got {path.name!r}")
        with self._lock:
            records = self.images()
            labels = self.labels()
        fields = [f.name for f in dataclasses.fields(ImageRecord)]
        pairs = sorted({(lab.classifier, lab.axis) for lab in labels})
        names = self._label_columns(fields, pairs)
        by_id = {(lab.key, lab.classifier, lab.axis): lab for lab in labels}

        columns: dict[str, list[Any]] = {name: [] for name in fields}
        for name in names:
            columns[name] = []
        for record in records:
            for name in fields:
                value = getattr(record, name)
                columns[name].append(json.dumps(value, sort_keys=True) if name == "steering" else value)
            for (classifier, axis), (label_col, probs_col) in zip(pairs, _pairwise(names), strict=True):
                lab = by_id.get((record.key, classifier, axis))
                columns[label_col].append(lab.label if lab else None)
                columns[probs_col].append(json.dumps(lab.probs, sort_keys=True) if lab else None)

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            if kind == ".parquet":
                _write_parquet(tmp, columns)
            else:
                _write_csv(tmp, columns, len(records))
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        return path

    @staticmethod
    def _label_columns(fields: list[str], pairs: list[tuple[str, str]]) -> list[str]:
        """Label and probs column names, alternating, in the order of ``pairs``."""

        def build(prefixed: bool) -> list[str]:
            out = []
            for classifier, axis in pairs:
                base = f"{classifier}:{axis}" if prefixed else axis
                out += [base, f"{base}_probs"]
            return out

        prefixed = len({classifier for classifier, _ in pairs}) > 1
        names = build(prefixed)
        if not prefixed and len(set(fields) | set(names)) < len(fields) + len(names):
            names = build(True)
        if len(set(fields) | set(names)) < len(fields) + len(names):
            raise ValueError(f"label axes give clashing export column names: {names}")
        return names


def _pairwise(names: list[str]) -> Iterable[tuple[str, str]]:
    return zip(names[0::2], names[1::2], strict=True)


def _write_parquet(path: Path, columns: dict[str, list[Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {
        "seed": pa.int64(),
        "image_index": pa.int64(),
        "truncated": pa.bool_(),
        "created_at": pa.float64(),
    }
    schema = pa.schema([(name, types.get(name, pa.string())) for name in columns])
    table = pa.Table.from_pydict(columns, schema=schema)
    pq.write_table(table, path)


def _write_csv(path: Path, columns: dict[str, list[Any]], n_rows: int) -> None:
    names = list(columns)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(names)
        for i in range(n_rows):
            writer.writerow(columns[name][i] for name in names)


def check_out_dir(out_dir: Path | str) -> None:
    """Refuse a run folder that is a file or cannot be written (read-only, no permission)."""
    path = Path(out_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {path} is a file; choose a folder")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"--out {path}: {existing} is a file, so no folder can be made under it")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(
            f"--out {path}: {existing} is not writable (read-only or no permission); choose another folder"
        )
