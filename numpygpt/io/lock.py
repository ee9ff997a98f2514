"""One process at a time in a folder: a lock file that names its holder.

A run folder is written by one process: two `train` runs (or a `train` and a `finetune`, or
two resumes) writing the same checkpoint would each overwrite the other's saves. The lock is
taken atomically (flock), released on exit however the process ends, and a lock file left
by a process that died is taken over with a message.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from ..errors import ConfigError
from .files import quote

LOCK_NAME = ".numpygpt.lock"  # in a run folder while a process trains in it


class RunLock:
    """One process at a time in a run folder: `with RunLock(out, "numpygpt train"): ...`.

    The lock is the file OUT/.numpygpt.lock, locked with flock (the kernel releases the lock
    when the process ends, however it ends) and holding the pid, host, command and start of
    the process that has it, so that a second process refuses in one line that names the
    first. A lock file left by a process that died (its flock gone) is taken over, with a
    message. Where flock is missing (Windows), the file is created exclusively instead, and
    one naming a process that no longer runs on this host is taken over.

    Taking the lock creates the folder if needed (and removes it again on release if the run
    never wrote into it). Reading a run (`sample`) takes no lock. `path`: the lock file, when
    it cannot be in the folder (a course build swaps its folder whole: its lock is beside it);
    `hint`: what the refusal adds.
    """

    def __init__(self, out, command, warn=None, *, path=None,
                 hint=" (sampling from it works meanwhile)"):
        self.out, self.command, self.hint = Path(out), command, hint
        self.path = Path(path) if path is not None else self.out / LOCK_NAME
        self.warn = warn or (lambda msg: print(msg, file=sys.stderr))
        self._fd, self._made_folder = None, False

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()

    def acquire(self):
        """Take the lock, or raise ConfigError naming the process that holds it."""
        try:
            folder = self.path.parent
            self._made_folder = not folder.exists()
            folder.mkdir(parents=True, exist_ok=True)
            for _ in range(10):  # retried only if the file was replaced under us
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                if self._lock(fd):
                    break
                os.close(fd)
            else:
                raise ConfigError(f"cannot lock {quote(self.out)}: its lock file keeps changing")
        except OSError as e:
            raise ConfigError(f"cannot lock the --out folder {quote(self.out)}: "
                              f"{e.strerror or e}") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, (json.dumps(info) + "\n").encode(), 0)
        os.fsync(self._fd)

    def _lock(self, fd):
        """flock fd; True if we now hold the lock of the file at self.path."""
        try:
            import fcntl
        except ImportError:  # no flock: the exclusive-create fallback
            return self._lock_exclusive(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(self._held_message()) from None
        try:  # the holder may have removed the file as we opened it: lock the one at the path
            if os.stat(self.path).st_ino != os.fstat(fd).st_ino:
                return False
        except FileNotFoundError:
            return False
        left = self._holder()
        if left and left.get("pid") != os.getpid():
            self.warn(f"{self.command}: took over {quote(self.out)}: its lock was left by "
                      f"{left.get('command', 'a numpygpt run')} (pid {left.get('pid')}), which "
                      "has stopped")
        self._fd = fd
        return True

    def _lock_exclusive(self, fd):
        left = self._holder()
        if left and left.get("pid") != os.getpid():
            alive = left.get("host") != socket.gethostname() or _pid_alive(left.get("pid"))
            if alive:
                os.close(fd)
                raise ConfigError(self._held_message())
            self.warn(f"{self.command}: took over {quote(self.out)} from pid {left.get('pid')}, "
                      "which has stopped")
        self._fd = fd
        return True

    def _holder(self):
        """The lock file's description of its holder, or None (empty, damaged, missing)."""
        try:
            with open(self.path, encoding="utf-8") as f:
                d = json.loads(f.read(4096) or "null")
        except (OSError, ValueError):
            return None
        return d if isinstance(d, dict) else None

    def _held_message(self):
        for _ in range(40):  # a holder that has just locked writes its description next
            h = self._holder()
            if h:
                break
            time.sleep(0.05)
        else:
            h = {}
        who = (f"{h.get('command', 'another numpygpt run')} (pid {h.get('pid', '?')} on "
               f"{h.get('host', '?')}, since {h.get('since', '?')})" if h else
               "another numpygpt run, which is starting")
        return (f"--out {quote(self.out)} is in use by {who}; wait for it to end, or choose "
                f"another --out{self.hint}")

    def release(self):
        """Remove the lock file and drop the lock (a folder made for nothing goes too)."""
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self._fd)  # closing the file drops its flock
        self._fd = None
        if self._made_folder:
            try:
                self.path.parent.rmdir()  # only if still empty
            except OSError:
                pass


def _pid_alive(pid):
    if type(pid) is not int or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists, owned by someone else
    return True


def check_free(out, path=None):
    """Refuse (ConfigError naming the holder) a folder another process holds the lock of,
    without taking it: the first thing a command that would write there checks, so that a
    second `train` hears "in use by pid ..." rather than advice about --resume."""
    probe = RunLock(out, "", path=path)
    try:
        fd = os.open(probe.path, os.O_RDONLY)
    except OSError:
        return  # no lock file (or none we can read): nobody holds it
    left = probe._holder()
    if left and left.get("pid") == os.getpid():
        os.close(fd)
        return  # we hold it
    try:
        import fcntl
    except ImportError:
        os.close(fd)
        if left and left.get("host") == socket.gethostname() and _pid_alive(left.get("pid")):
            raise ConfigError(probe._held_message()) from None
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ConfigError(probe._held_message()) from None
    finally:
        os.close(fd)  # (closing drops the flock we may have taken)

