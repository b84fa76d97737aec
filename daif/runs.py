"""Run directories: each run its own folder, one process per folder, nothing left by a
failed start.

The folder a run writes is chosen once, before Hydra creates it (``hydra.run.dir`` in
``configs/train.yaml`` calls the ``daif.run_dir`` resolver registered here), by
:func:`choose_run_dir`:

* ``trainer.run_dir`` when given (the trainer refuses it if it already holds another run);
* else, with ``trainer.resume``, the run the checkpoint belongs to, so a resumed run keeps
  writing where it stopped;
* else the preset path ``runs/<name>/<env>/<agent>/seed<seed>``, or, when that already
  exists, the first free ``…/seed<seed>-1``, ``-2``, …; ``trainer.overwrite=true`` takes
  the preset path as it is and clears the old run's files.

Sweeps get their own folder the same way (``daif.new_dir`` on ``hydra.sweep.dir``);
``daif.sqlite`` turns a path into the absolute SQLite URL of an Optuna study. The
resolvers are cached by OmegaConf, and Hydra copies that cache into each sweep job's
config, so every process of a run or sweep agrees on the folder.

A run holds an exclusive lock on ``<run_dir>/.lock`` (``fcntl.flock``: the kernel drops it
when the process dies, SIGKILL included) for as long as it trains.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import TracebackType

from omegaconf import OmegaConf

from daif.checkpoint import CHECKPOINT_SUBDIR
from daif.validation import ConfigError

LOCK_FILE = ".lock"
# What a run writes besides Hydra's own files: their presence marks a folder as a run's.
RUN_ARTIFACTS: tuple[str, ...] = (CHECKPOINT_SUBDIR, "eval.json", "videos")
EVENTS_PREFIX = "events.out.tfevents."
# Written by Hydra when it opens the job (and by the lock); a folder with only these holds
# no results.
HYDRA_FILES: tuple[str, ...] = (".hydra", LOCK_FILE)


class RunDirError(ConfigError):
    """A run directory is taken (by another run, or by a live process)."""


def holds_run(path: str | Path) -> bool:
    """True if ``path`` holds a run's results (checkpoints, event files, an evaluation)."""
    p = Path(path)
    if not p.is_dir():
        return False
    return any(
        entry.name in RUN_ARTIFACTS or entry.name.startswith(EVENTS_PREFIX) for entry in p.iterdir()
    )


def new_dir(base: str | Path) -> str:
    """``base`` if it does not exist or is empty, else the first free ``base-1``, ``base-2``…"""
    base = str(base).rstrip("/")
    candidate, n = base, 0
    while Path(candidate).exists() and any(Path(candidate).iterdir()):
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def run_dir_of_checkpoint(resume: str | Path) -> str | None:
    """The run a checkpoint belongs to: ``<run>`` for ``<run>/checkpoints/<file>`` or a run
    dir itself; ``None`` for a file outside a run's layout or a path that does not exist."""
    p = Path(resume).expanduser()
    if p.is_dir():
        return str(p)
    if p.is_file() and p.parent.name == CHECKPOINT_SUBDIR:
        return str(p.parent.parent)
    return None


def choose_run_dir(
    run_dir: str | None, resume: str | None, overwrite: bool | None, default: str
) -> str:
    """The folder a run writes (see the module docstring for the rules).

    ``run_dir`` given but already holding a run it does not resume: the explicit folder is
    refused later by :func:`check_run_dir`; the folder returned here (where Hydra puts its
    ``.hydra/`` and log) is then a fresh sibling, so the refusal leaves the old run's files
    untouched and :func:`discard_unused` removes the sibling.
    """
    if run_dir:
        resumed = run_dir_of_checkpoint(resume) if resume else None
        taken = holds_run(run_dir) and not overwrite
        if taken and (resumed is None or Path(resumed).resolve() != Path(run_dir).resolve()):
            return new_dir(run_dir)
        return str(run_dir)
    if resume:
        resumed = run_dir_of_checkpoint(resume)
        if resumed is not None:
            return resumed
    return str(default) if overwrite else new_dir(default)


def check_run_dir(run_dir: Path, *, resuming_here: bool, overwrite: bool) -> None:
    """Refuse to start a new run in a folder that holds another run, unless overwriting.

    Raises:
        RunDirError: naming the folder and the two ways forward.
    """
    if resuming_here or not holds_run(run_dir):
        return
    if overwrite:
        clear_run(run_dir)
        return
    raise RunDirError(
        f"trainer.run_dir={str(run_dir)!r} already holds a run; continue it with "
        f"trainer.resume={str(run_dir)!r}, replace it with trainer.overwrite=true, or pick "
        "another trainer.run_dir"
    )


def clear_run(run_dir: Path) -> None:
    """Delete a run's results (checkpoints, event files, eval.json, videos) from
    ``run_dir``; Hydra's files of the new run stay."""
    for entry in run_dir.iterdir():
        if entry.name in RUN_ARTIFACTS or entry.name.startswith(EVENTS_PREFIX):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def discard_unused(run_dir: str | Path | None) -> None:
    """Remove ``run_dir`` (and parents left empty) if it holds nothing but Hydra's files
    and logs: what a start that failed leaves behind."""
    if run_dir is None:
        return
    p = Path(run_dir).resolve()
    if not p.is_dir():
        return
    if any(e.name not in HYDRA_FILES and not e.name.endswith(".log") for e in p.iterdir()):
        return
    shutil.rmtree(p, ignore_errors=True)
    stop = Path.cwd().resolve()
    parent = p.parent
    while parent != stop and stop in parent.parents:
        try:
            parent.rmdir()  # only succeeds when empty
        except OSError:
            break
        parent = parent.parent


def clean_stale_temp_files(run_dir: Path) -> list[Path]:
    """Delete half-written checkpoint temp files (``checkpoints/.*.tmp``) that a killed
    process left; call with the run's lock held. Returns what was removed."""
    folder = run_dir / CHECKPOINT_SUBDIR
    removed = sorted(folder.glob(".*.tmp")) if folder.is_dir() else []
    for f in removed:
        f.unlink(missing_ok=True)
    return removed


class RunLock:
    """Exclusive lock on ``<run_dir>/.lock`` for the life of a run.

    Raises:
        RunDirError: on :meth:`acquire`, if another live process holds it.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; runs still get their own dirs
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            who = (
                "another Trainer in this process"
                if holder == str(os.getpid())
                else f"another process (pid {holder})"
            )
            raise RunDirError(
                f"run dir {str(self.path.parent)!r} is in use by {who}; wait for it to end "
                "or pick another trainer.run_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __del__(self) -> None:  # a Trainer dropped without run() frees its folder
        self.release()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def sqlite_url(path: str | Path) -> str:
    """``sqlite:///<absolute path>`` for a database file, its folder created: an Optuna
    study shared by several processes (``hydra.sweeper.storage``). SQLite cannot create
    the folder itself, and an absolute path keeps one file whatever each process's
    working directory."""
    p = Path(path).expanduser().resolve()
    p.parent.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{p}"
    try:
        import fcntl

        import optuna
    except ImportError:  # no sweep extra (or Windows): the sweeper says what is missing
        return url
    # Create the tables once, under a lock: sweeper processes that start together would
    # otherwise race to create the same schema and one of them fail.
    with open(p.with_name(p.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        optuna.storages.RDBStorage(url)
    return url


def _register_resolvers() -> None:
    # use_cache: resolved once per config; Hydra copies the cache into sweep jobs' configs
    if not OmegaConf.has_resolver("daif.run_dir"):
        OmegaConf.register_new_resolver("daif.run_dir", choose_run_dir, use_cache=True)
    if not OmegaConf.has_resolver("daif.new_dir"):
        OmegaConf.register_new_resolver("daif.new_dir", new_dir, use_cache=True)
    if not OmegaConf.has_resolver("daif.sqlite"):
        OmegaConf.register_new_resolver("daif.sqlite", sqlite_url, use_cache=True)


_register_resolvers()
