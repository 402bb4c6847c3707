"""A private PostgreSQL server run from Python, for `chorus serve` without DATABASE_URL and tests.

Layout for a data directory ``D`` (all in ``D``'s parent directory):

- ``D/``           the cluster (created by initdb on first start, reused afterwards)
- ``D.password``   the superuser password, generated at initdb time, mode 0600, owned by the
                   user running Python (the server itself never reads it)
- ``D.log``        the server's stderr log, appended on every start
- ``D.lock``       an flock held while this process owns the running server, so a second owner
                   is refused and a server orphaned by a kill -9'd owner can be told apart

The server listens on 127.0.0.1 only, has no unix socket, and accepts only scram-sha-256
password logins as the superuser ``postgres``.

Running as root: initdb and pg_ctl refuse to run as root, so every PostgreSQL program is run as
the unprivileged ``postgres`` OS user; the data directory is chowned to it and, because that user
must be able to reach the data directory, the search bit ``o+x`` is added to every ancestor
directory that the ``postgres`` user could not otherwise traverse (pytest's temporary directories
and ``mktemp -d`` are mode 0700). Only the search bit is added, never read or write, and each
change is logged as a warning.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

__all__ = ["SERVER_OS_USER", "SUPERUSER", "EmbeddedPostgres", "find_pg_bin"]

log = logging.getLogger(__name__)

SUPERUSER = "postgres"
SERVER_OS_USER = "postgres"
LISTEN_HOST = "127.0.0.1"

_TOOLS = ("initdb", "pg_ctl", "postgres")
# These decide who can reach the server; letting callers override them would defeat the
# "127.0.0.1 only, no shared unix socket" guarantee.
_RESERVED_SETTINGS = frozenset({"port", "listen_addresses", "unix_socket_directories"})
_PORT_ATTEMPTS = 5
_LOG_MAX_BYTES = 10 * 1024 * 1024
# Tried in order: C collation keeps sorting fast and byte-stable, C.UTF-8 ctype makes
# upper()/lower()/regex classes work on non-ASCII text; plain C is the fallback for systems
# without a C.UTF-8 locale.
_LOCALE_CHOICES = (("--locale=C", "--lc-ctype=C.UTF-8"), ("--locale=C",))


def find_pg_bin() -> Path:
    """Return the directory holding initdb, pg_ctl and postgres.

    initdb on PATH wins (its symlinks are resolved, since pg_ctl looks for postgres next to
    itself); otherwise the newest ``/usr/lib/postgresql/*/bin`` (Debian's layout, not on PATH).
    """
    found = shutil.which("initdb")
    if found is not None:
        bindir = Path(found).resolve().parent
        if _has_tools(bindir):
            return bindir
    candidates = sorted(
        (d for d in Path("/usr/lib/postgresql").glob("*/bin") if _has_tools(d)),
        key=lambda d: _version_key(d.parent.name),
    )
    if candidates:
        return candidates[-1]
    raise FileNotFoundError(
        "PostgreSQL server programs (initdb, pg_ctl, postgres) were not found on PATH nor in "
        "/usr/lib/postgresql/*/bin; install them (Debian: `apt-get install postgresql`) or set "
        "DATABASE_URL to an existing server"
    )


def _has_tools(bindir: Path) -> bool:
    return all(os.access(bindir / tool, os.X_OK) for tool in _TOOLS)


def _version_key(name: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in name.split("."))
    except ValueError:
        return (-1,)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LISTEN_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600, atomically so a crash never leaves half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class _PortInUse(Exception):
    pass


class EmbeddedPostgres:
    """A PostgreSQL server owned by this process, with its cluster in ``data_dir``.

    ``start()`` creates the cluster on first use, starts the server and returns its URL;
    ``stop()`` shuts it down (fast mode). Data survives stop/start. ``settings`` are extra
    server settings passed as ``-c key=value`` (tests pass ``fsync=off``; the default keeps
    fsync on).
    """

    startup_timeout: float = 60.0
    shutdown_timeout: float = 60.0

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        dbname: str = "chorus",
        settings: dict[str, str] | None = None,
    ) -> None:
        settings = dict(settings or {})
        for key in settings:
            if key in _RESERVED_SETTINGS or not key or "=" in key:
                raise ValueError(f"setting {key!r} cannot be passed to EmbeddedPostgres")
        self.data_dir = Path(data_dir).resolve()
        self.dbname = dbname
        self.settings = settings
        self.password_file = self.data_dir.with_name(self.data_dir.name + ".password")
        self.log_file = self.data_dir.with_name(self.data_dir.name + ".log")
        self.lock_file = self.data_dir.with_name(self.data_dir.name + ".lock")
        self._requested_port = port
        self._port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock_fd: int | None = None
        self._bin: Path | None = None
        self._os_user: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self._os_user = pwd.getpwnam(SERVER_OS_USER)
            except KeyError:
                raise RuntimeError(
                    f"running as root, but initdb refuses root and there is no "
                    f"{SERVER_OS_USER!r} OS user to run PostgreSQL as; create one "
                    f"(`useradd --system {SERVER_OS_USER}`) or run as a normal user"
                ) from None

    # -- public API ---------------------------------------------------------------------------

    @property
    def bin_dir(self) -> Path:
        if self._bin is None:
            self._bin = find_pg_bin()
        return self._bin

    @property
    def port(self) -> int | None:
        """The port the running server listens on, None when stopped."""
        return self._port

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip()

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None and self._port is not None

    @property
    def url(self) -> str:
        """URL of ``dbname`` on the running server."""
        return self.url_for(self.dbname)

    def url_for(self, dbname: str) -> str:
        """URL of another database on the running server (it is not created)."""
        if self._port is None:
            raise RuntimeError("the embedded PostgreSQL server is not running")
        return (
            f"postgresql://{quote(SUPERUSER, safe='')}:{quote(self.password, safe='')}"
            f"@{LISTEN_HOST}:{self._port}/{quote(dbname, safe='')}"
        )

    def url_of_running(self) -> str | None:
        """The URL of this data directory's server when another process runs it (``chorus
        serve``): read from its ``postmaster.pid``, whose fourth line is the port. None
        when no server runs there."""
        if self._postmaster_pid() is None:
            return None
        try:
            port = int((self.data_dir / "postmaster.pid").read_text().split("\n")[3])
        except (OSError, ValueError, IndexError):
            return None
        return (
            f"postgresql://{quote(SUPERUSER, safe='')}:{quote(self.password, safe='')}"
            f"@{LISTEN_HOST}:{port}/{quote(self.dbname, safe='')}"
        )

    def start(self) -> str:
        if self.is_running:
            return self.url
        self._reap_dead_child()
        if not self._acquire_lock():
            raise RuntimeError(
                f"{self.data_dir} is in use by another process (it holds {self.lock_file}); "
                "stop it or use another data directory"
            )
        try:
            self._prepare_directories()
            if not (self.data_dir / "PG_VERSION").is_file():
                self._initdb()
            elif not self.password_file.is_file():
                raise RuntimeError(
                    f"{self.data_dir} is a cluster but its password file {self.password_file} "
                    "is missing; restore it or delete the cluster to start afresh"
                )
            self._clear_leftovers()
            self._launch()
            self._ensure_database()
        except BaseException:
            with contextlib.suppress(Exception):
                self.stop()
            raise
        return self.url

    def stop(self) -> None:
        """Fast shutdown; a no-op when not running. A server owned by another live process
        (holding the lock) is left alone; one orphaned by a killed owner is stopped."""
        if not self._acquire_lock():
            return
        try:
            if self._postmaster_pid() is not None:
                self._pg_ctl_stop()
            if self._proc is not None:
                self._terminate_child(self._proc)
                self._proc = None
            self._wait_no_server_processes()
        finally:
            self._port = None
            self._release_lock()

    def server_pids(self) -> list[int]:
        """PIDs of every live postgres process (postmaster and children) of this cluster."""
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and self._is_cluster_process(int(entry.name)):
                pids.append(int(entry.name))
        return pids

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedPostgres({str(self.data_dir)!r}, port={self._port})"

    # -- filesystem and users -----------------------------------------------------------------

    def _prepare_directories(self) -> None:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        if self._os_user is not None:
            uid, gid = self._os_user.pw_uid, self._os_user.pw_gid
            st = self.data_dir.stat()
            if (st.st_uid, st.st_gid) != (uid, gid):
                os.chown(self.data_dir, uid, gid)
            self._make_ancestors_traversable(uid, gid)
        # PostgreSQL refuses group/other access beyond 0750 on the data directory.
        if stat.S_IMODE(self.data_dir.stat().st_mode) & 0o027:
            os.chmod(self.data_dir, 0o700)

    def _make_ancestors_traversable(self, uid: int, gid: int) -> None:
        for ancestor in self.data_dir.parents:
            st = ancestor.stat()
            mode = stat.S_IMODE(st.st_mode)
            if (
                (st.st_uid == uid and mode & stat.S_IXUSR)
                or (st.st_gid == gid and mode & stat.S_IXGRP)
                or mode & stat.S_IXOTH
            ):
                continue
            os.chmod(ancestor, mode | stat.S_IXOTH)
            log.warning(
                "added the search bit o+x to %s so the %r user can reach %s",
                ancestor,
                SERVER_OS_USER,
                self.data_dir,
            )

    def _acquire_lock(self) -> bool:
        if self._lock_fd is not None:
            return True
        self.lock_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- subprocesses -------------------------------------------------------------------------

    def _run(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        uid = gid = None
        groups: list[int] | None = None
        if self._os_user is not None:
            uid, gid, groups = self._os_user.pw_uid, self._os_user.pw_gid, []
        # cwd="/" because the caller's cwd (e.g. /root) may be unreadable to the postgres user.
        return subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            cwd="/",
            timeout=timeout,
            user=uid,
            group=gid,
            extra_groups=groups,
            check=False,
        )

    def _initdb(self) -> None:
        password = secrets.token_urlsafe(32)
        # Written before initdb so a cluster never exists without its password on disk.
        _write_private(self.password_file, password + "\n")
        # initdb reads the password from a file; it must be readable by the postgres user, so it
        # is a short-lived copy next to the data directory (whose ancestors are now traversable).
        fd, pwfile = tempfile.mkstemp(dir=self.data_dir.parent, prefix=f".{self.data_dir.name}.")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(password + "\n")
            if self._os_user is not None:
                os.chown(pwfile, self._os_user.pw_uid, self._os_user.pw_gid)
            argv = [
                str(self.bin_dir / "initdb"),
                "--pgdata",
                str(self.data_dir),
                "--username",
                SUPERUSER,
                "--pwfile",
                pwfile,
                "--auth",
                "scram-sha-256",
                "--encoding",
                "UTF8",
            ]
            # Syncing the fresh cluster only matters when the server will fsync too.
            if self.settings.get("fsync", "on").lower() in ("off", "false", "0", "no"):
                argv.append("--no-sync")
            errors = []
            for locale_args in _LOCALE_CHOICES:
                result = self._run([*argv, *locale_args], timeout=300)
                if result.returncode == 0:
                    break
                errors.append(result.stdout + result.stderr)
            else:
                raise RuntimeError(f"initdb failed for {self.data_dir}:\n" + "\n".join(errors))
        finally:
            with contextlib.suppress(OSError):
                os.unlink(pwfile)
        # Rewritten in place (keeping the postgres user's ownership): only password logins
        # over loopback TCP, nothing else; there is no unix socket to accept "local" on.
        (self.data_dir / "pg_hba.conf").write_text(
            "# Written by chorus EmbeddedPostgres: loopback TCP with a password only.\n"
            f"host all all {LISTEN_HOST}/32 scram-sha-256\n"
        )

    def _launch(self) -> None:
        if self.log_file.exists() and self.log_file.stat().st_size > _LOG_MAX_BYTES:
            self.log_file.write_bytes(b"")
        attempts = 1 if self._requested_port is not None else _PORT_ATTEMPTS
        deadline = time.monotonic() + self.startup_timeout
        for _ in range(attempts):
            port = self._requested_port if self._requested_port is not None else _free_port()
            try:
                self._spawn_and_wait(port, deadline)
            except _PortInUse:
                # Another process grabbed the port between _free_port() and bind(): pick again.
                continue
            self._port = port
            return
        raise RuntimeError(f"PostgreSQL could not bind a port after {attempts} attempts")

    def _spawn_and_wait(self, port: int, deadline: float) -> None:
        argv = [str(self.bin_dir / "postgres"), "-D", str(self.data_dir)]
        for key, value in self.settings.items():
            argv += ["-c", f"{key}={value}"]
        argv += [
            "-c",
            f"port={port}",
            "-c",
            f"listen_addresses={LISTEN_HOST}",
            "-c",
            "unix_socket_directories=",
        ]
        uid = gid = None
        groups: list[int] | None = None
        if self._os_user is not None:
            uid, gid, groups = self._os_user.pw_uid, self._os_user.pw_gid, []
        log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        log_fd = os.open(
            self.log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        with os.fdopen(log_fd, "ab") as log_fh:
            # A new session so a Ctrl-C aimed at the owner does not hit the server before the
            # owner has finished with it; the owner stops it explicitly.
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_fh,
                stderr=subprocess.STDOUT,
                cwd="/",
                start_new_session=True,
                user=uid,
                group=gid,
                extra_groups=groups,
            )
        proc = self._proc
        delay = 0.02
        last_error: Exception | None = None
        while True:
            returncode = proc.poll()
            if returncode is not None:
                self._proc = None
                output = self._log_since(log_offset)
                if self._requested_port is None and "could not bind" in output:
                    raise _PortInUse()
                raise RuntimeError(
                    f"PostgreSQL exited with status {returncode} during start-up; log "
                    f"{self.log_file}:\n{output}"
                )
            try:
                with psycopg.connect(self._conninfo("postgres", port), connect_timeout=2):
                    return
            except psycopg.OperationalError as exc:
                if "password authentication failed" in str(exc):
                    raise RuntimeError(
                        f"PostgreSQL at {self.data_dir} rejected the password in "
                        f"{self.password_file}"
                    ) from exc
                last_error = exc
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"PostgreSQL did not accept connections within {self.startup_timeout}s "
                    f"({last_error}); log {self.log_file}:\n{self._log_since(log_offset)}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def _conninfo(self, dbname: str, port: int | None = None) -> str:
        return make_conninfo(
            host=LISTEN_HOST,
            port=port if port is not None else self._port,
            user=SUPERUSER,
            password=self.password,
            dbname=dbname,
        )

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.log_file, "rb") as fh:
                fh.seek(offset)
                return fh.read()[-8000:].decode(errors="replace")
        except OSError:
            return ""

    def _ensure_database(self) -> None:
        with psycopg.connect(self._conninfo("postgres"), autocommit=True) as conn:
            found = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.dbname,)
            ).fetchone()
            if found is None:
                with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.dbname)))

    # -- stopping and leftovers ---------------------------------------------------------------

    def _pidfile_pid(self) -> int | None:
        try:
            first_line = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
            return int(first_line)
        except (OSError, ValueError):
            return None

    def _is_cluster_process(self, pid: int) -> bool:
        # A postmaster chdirs into its data directory and its children inherit that, so
        # "a postgres binary whose cwd is our data directory" identifies exactly our processes,
        # even when postmaster.pid names a PID the kernel has since reused. Zombies have no cwd.
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            return False
        return Path(cwd) == self.data_dir and Path(exe.removesuffix(" (deleted)")).name == (
            "postgres"
        )

    def _postmaster_pid(self) -> int | None:
        pid = self._pidfile_pid()
        if pid is not None and self._is_cluster_process(pid):
            return pid
        return None

    def _pg_ctl_stop(self) -> None:
        base = [str(self.bin_dir / "pg_ctl"), "stop", "-D", str(self.data_dir), "-w"]
        timeout = int(self.shutdown_timeout)
        result = self._run([*base, "-m", "fast", "-t", str(timeout)], timeout=timeout + 10)
        if result.returncode != 0 and self._postmaster_pid() is not None:
            log.warning(
                "fast shutdown of %s failed (%s); using immediate mode",
                self.data_dir,
                (result.stdout + result.stderr).strip(),
            )
            self._run([*base, "-m", "immediate", "-t", str(timeout)], timeout=timeout + 10)

    def _terminate_child(self, proc: subprocess.Popen[bytes]) -> None:
        # Normally pg_ctl has already stopped it and this only reaps it; the signals are a
        # fallback for a child that is somehow still alive (SIGINT = fast, SIGQUIT = immediate).
        for sig in (None, signal.SIGINT, signal.SIGQUIT, signal.SIGKILL):
            if sig is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)
            try:
                proc.wait(timeout=self.shutdown_timeout / 4)
                return
            except subprocess.TimeoutExpired:
                continue

    def _reap_dead_child(self) -> None:
        # A killed child stays a zombie until waited for, and a zombie's PID still looks alive.
        if self._proc is not None and self._proc.poll() is not None:
            self._proc = None
            self._port = None

    def _wait_no_server_processes(self) -> None:
        deadline = time.monotonic() + self.shutdown_timeout
        while pids := self.server_pids():
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"PostgreSQL processes {pids} of {self.data_dir} did not exit within "
                    f"{self.shutdown_timeout}s"
                )
            time.sleep(0.05)

    def _clear_leftovers(self) -> None:
        """Make the cluster startable after an unclean end of a previous run.

        We hold the lock, so any live server on this cluster was orphaned by a killed owner:
        stop it. Once no process of the cluster is left, a postmaster.pid naming a live PID
        names a reused PID, which would make PostgreSQL refuse to start, so it is removed; a
        postmaster.pid naming a dead PID is left for PostgreSQL, which recovers from it itself.
        """
        pid = self._postmaster_pid()
        if pid is not None:
            log.warning(
                "stopping PostgreSQL (pid %d) left running on %s by a previous run",
                pid,
                self.data_dir,
            )
            self._pg_ctl_stop()
        self._wait_no_server_processes()
        stale = self._pidfile_pid()
        if stale is not None and _pid_exists(stale):
            log.warning(
                "removing stale %s (its pid %d now belongs to another program)",
                self.data_dir / "postmaster.pid",
                stale,
            )
            (self.data_dir / "postmaster.pid").unlink(missing_ok=True)


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
