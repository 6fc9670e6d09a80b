"""Session files, one per session in a directory (PHP style), written atomically."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from pathlib import Path

from servers.errors import ConfigError
from servers.stores import SessionRecord, StoreGuard

_GUARD = StoreGuard("session directory", (OSError,))
_PREFIX = "sess_"


class FileSessionStore:
    """`<dir>/sess_<id>` holds the record.

    Ids reach this class only after the strict format check (base64url, fixed length), so a
    name can never hold a separator or `..`. File calls are synchronous on purpose: a local
    small-file read costs less than a hop to a thread pool, as in PHP's handler.
    """

    kind = "file"

    def __init__(self, directory: Path) -> None:
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot use session directory {directory}: {exc.strerror}") from None
        if not os.access(directory, os.R_OK | os.W_OK | os.X_OK):
            raise ConfigError(f"session directory {directory} is not readable and writable")
        self._dir = directory.resolve()
        self._dirname = str(self._dir)

    def _path(self, sid: str) -> str:
        return f"{self._dirname}/{_PREFIX}{sid}"

    async def put(self, sid: str, record: SessionRecord) -> None:
        """Write to a temporary file in the same directory, then rename over the target."""
        with _GUARD:
            fd, tmp = tempfile.mkstemp(dir=self._dirname, prefix=".tmp_")
            try:
                os.write(fd, record.encode())
                os.close(fd)
                os.replace(tmp, self._path(sid))
            except BaseException:
                with contextlib.suppress(OSError):
                    os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise

    async def touch(self, sid: str, record: SessionRecord) -> None:
        """Rewrite the file if it still exists (a logout racing this one may still win)."""
        if os.path.exists(self._path(sid)):
            await self.put(sid, record)

    async def get(self, sid: str) -> SessionRecord | None:
        """Return the unexpired record, or None (an expired file is removed)."""
        path = self._path(sid)
        with _GUARD:
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                return None
        record = SessionRecord.decode(data)
        if record is None or record.expires <= time.time():
            with contextlib.suppress(OSError):
                os.unlink(path)
            return None
        return record

    async def take(self, sid: str) -> SessionRecord | None:
        """Claim the file by renaming it (atomic, so one caller wins), then read and delete it."""
        path = self._path(sid)
        claimed = f"{self._dirname}/.taken_{sid}_{os.getpid()}_{id(asyncio.current_task())}"
        with _GUARD:
            try:
                os.rename(path, claimed)
            except FileNotFoundError:
                return None
            try:
                with open(claimed, "rb") as f:
                    data = f.read()
            finally:
                os.unlink(claimed)
        record = SessionRecord.decode(data)
        return record if record is not None and record.expires > time.time() else None

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the directory is still there and writable."""
        with _GUARD:
            if not os.access(self._dirname, os.W_OK | os.X_OK):
                raise OSError("session directory is not writable")

    def purge_expired(self) -> int:
        """Delete expired and unreadable session files; return how many were removed."""
        removed = 0
        now = time.time()
        with os.scandir(self._dirname) as entries:
            for entry in entries:
                if not entry.name.startswith(_PREFIX):
                    continue
                try:
                    with open(entry.path, "rb") as f:
                        record = SessionRecord.decode(f.read())
                    if record is None or record.expires <= now:
                        os.unlink(entry.path)
                        removed += 1
                except OSError:
                    continue
        return removed

    async def purge_forever(self, every: float) -> None:
        """Run `purge_expired` each `every` seconds, until cancelled."""
        while True:
            await asyncio.sleep(every)
            self.purge_expired()
