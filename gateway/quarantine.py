"""Poison quarantine across crashes: a message that kills the process is not
decoded a third time.

What we chose: a journal of in-flight message fingerprints on local disk, one
small file per batch, written before the batch is validated and removed once
the batch is acknowledged. A file still there when the process starts again
means those messages were in flight when it died, however it died (an uncaught
exception, SIGKILL, a segfault in a C extension: no code of ours has to run at
the crash). Each fingerprint then gets a strike.

- A message with a strike is processed in a batch of its own, so that a second
  crash pins it alone instead of its whole batch (the innocent messages of a
  crashed batch pass on their own and lose their strike).
- A message with ``crashes`` strikes is not decoded again: it becomes a
  ``poison`` dead letter with its raw bytes and is acknowledged.

Why a local file and not a table: it costs one small write and one unlink per
batch, needs no database (the crash may be the database driver's), and the
broker redelivers unacknowledged messages to the same client id, hence the
same machine and folder. The page cache keeps what was written across a
process crash; only a machine crash could lose a journal, and then the cost is
one more crash, not a lost message.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

from gateway.bridge import InboundMessage

__all__ = ["Quarantine", "fingerprint"]

_LOG = logging.getLogger(__name__)
_DIGEST = 16
_STRIKES = "strikes.json"
# Strikes are kept for this many messages at most; the oldest go first (a message
# with a strike that is never redelivered must not keep its entry forever).
MAX_STRIKES = 10_000


def fingerprint(message: InboundMessage) -> bytes:
    data = message.topic.encode("utf-8", "surrogatepass") + b"\0" + message.payload
    return hashlib.blake2b(data, digest_size=_DIGEST).digest()


class Quarantine:
    def __init__(self, directory: Path, *, crashes: int) -> None:
        self.directory = directory
        self.crashes = crashes
        self._pid = os.getpid()
        self._count = 0
        self._open: set[Path] = set()
        directory.mkdir(parents=True, exist_ok=True)
        self._strikes = self._load()
        self._count_crashes()

    @classmethod
    def for_worker(cls, data_dir: Path, client_id: str, *, crashes: int) -> Quarantine:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", client_id)
        return cls(data_dir / "quarantine" / safe, crashes=crashes)

    # -- start-up ---------------------------------------------------------------------

    def _load(self) -> dict[str, int]:
        try:
            data = json.loads((self.directory / _STRIKES).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            _LOG.warning("quarantine strikes unreadable (%s); starting afresh", exc)
            return {}
        return {str(k): int(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def _count_crashes(self) -> None:
        leftovers = sorted(self.directory.glob("inflight-*.bin"))
        if not leftovers:
            return
        struck = 0
        for path in leftovers:
            raw = path.read_bytes()
            for start in range(0, len(raw) - _DIGEST + 1, _DIGEST):
                key = raw[start : start + _DIGEST].hex()
                self._strikes[key] = self._strikes.pop(key, 0) + 1  # re-inserted: newest last
                struck += 1
        while len(self._strikes) > MAX_STRIKES:
            del self._strikes[next(iter(self._strikes))]
        self._save()
        for path in leftovers:
            path.unlink(missing_ok=True)
        poison = sum(1 for n in self._strikes.values() if n >= self.crashes)
        _LOG.warning(
            "the last run ended with %d message(s) in flight; they are processed one by one,"
            " and %d in flight during %d crashes are quarantined as poison",
            struck,
            poison,
            self.crashes,
        )

    def _save(self) -> None:
        tmp = self.directory / f"{_STRIKES}.tmp"
        tmp.write_text(json.dumps(self._strikes), encoding="utf-8")
        tmp.replace(self.directory / _STRIKES)

    # -- the pipeline's calls ---------------------------------------------------------

    def strikes(self, message: InboundMessage) -> int:
        if not self._strikes:
            return 0  # the common case costs no hashing
        return self._strikes.get(fingerprint(message).hex(), 0)

    def sort(
        self, messages: Sequence[InboundMessage]
    ) -> tuple[list[InboundMessage], list[InboundMessage], list[InboundMessage]]:
        """(poison, clean, suspects): the messages not to decode again, those to
        process as usual, and those to process each alone in the pipeline."""
        if not self._strikes:
            return [], list(messages), []
        poison: list[InboundMessage] = []
        clean: list[InboundMessage] = []
        suspects: list[InboundMessage] = []
        for message in messages:
            strikes = self.strikes(message)
            if strikes >= self.crashes:
                poison.append(message)
            elif strikes:
                suspects.append(message)
            else:
                clean.append(message)
        return poison, clean, suspects

    def in_flight(self) -> int:
        """Batches journaled and not yet acknowledged."""
        return len(self._open)

    def begin(self, messages: Sequence[InboundMessage]) -> Path:
        """Journal a batch as in flight; before anything of it is decoded."""
        self._count += 1
        path = self.directory / f"inflight-{self._pid}-{self._count}.bin"
        path.write_bytes(b"".join(fingerprint(m) for m in messages))
        self._open.add(path)
        return path

    def end(self, journal: Path, messages: Sequence[InboundMessage]) -> None:
        """The batch is committed and acknowledged (poison included): no longer in flight."""
        journal.unlink(missing_ok=True)
        self._open.discard(journal)
        if self._strikes:
            keys = [fingerprint(m).hex() for m in messages]
            cleared = [k for k in keys if self._strikes.pop(k, None) is not None]
            if cleared:
                self._save()

    def close(self) -> None:
        """A clean stop: what is still in flight was not a crash's doing."""
        for path in list(self._open):
            path.unlink(missing_ok=True)
        self._open.clear()
