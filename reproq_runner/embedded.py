"""A PostgreSQL cluster the project owns: initdb into a folder, serve on a unix socket.

Used by ``make demo`` (data under ``.reproq/``) and by the test suite (a temporary folder).
PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` system user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from psycopg.conninfo import make_conninfo

PG_BIN_CANDIDATES = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin",
                     "/usr/lib/postgresql/17/bin")


class EmbeddedPostgresError(RuntimeError):
    """The embedded cluster could not be created or started."""


def find_pg_bin() -> Path:
    configured = os.environ.get("REPROQ_PG_BIN")
    for candidate in ([configured] if configured else []) + list(PG_BIN_CANDIDATES):
        if candidate and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    raise EmbeddedPostgresError(
        "no PostgreSQL server binaries found (looked in $REPROQ_PG_BIN, "
        f"{', '.join(PG_BIN_CANDIDATES)} and PATH); install postgresql-15"
    )


def _server_user() -> str | None:
    """The user the server runs as: ``postgres`` when we are root, else ourselves."""
    return "postgres" if os.geteuid() == 0 else None


def pg_cron_available(pg_bin: Path) -> bool:
    libdir = subprocess.run([str(pg_bin / "pg_config"), "--pkglibdir"], capture_output=True,
                            text=True, check=False).stdout.strip()
    return bool(libdir) and (Path(libdir) / "pg_cron.so").exists()


@dataclass
class EmbeddedPostgres:
    """initdb/pg_ctl wrapper. ``settings`` become ``-c name=value`` server options."""

    root: Path
    port: int = 5432
    settings: dict[str, str] = field(default_factory=dict)
    pg_bin: Path = field(default_factory=find_pg_bin)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "run"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    @property
    def user(self) -> str:
        """The database superuser initdb created: the server's OS user."""
        return _server_user() or pwd.getpwuid(os.geteuid()).pw_name

    def dsn(self, dbname: str = "postgres") -> str:
        # make_conninfo quotes what needs it (a socket folder with a space in its path).
        return make_conninfo(host=str(self.socket_dir), port=self.port, dbname=dbname,
                             user=self.user)

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        result = subprocess.run(self._command(*args), capture_output=True, text=True,
                                check=False)
        if result.returncode != 0:
            log = self.log_file.read_text()[-2000:] if self.log_file.exists() else ""
            raise EmbeddedPostgresError(
                f"{args[0]} failed ({result.returncode}): {result.stderr.strip()}\n{log}"
            )
        return result

    def _prepare_dirs(self) -> None:
        for directory in (self.root, self.socket_dir):
            directory.mkdir(parents=True, exist_ok=True)
        user = _server_user()
        if user:
            entry = pwd.getpwnam(user)
            for path in (self.root, self.socket_dir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
            # The server user must be able to reach the root folder through its parents.
            for parent in self.root.resolve().parents:
                if parent != Path("/") and not os.stat(parent).st_mode & 0o001:
                    os.chmod(parent, os.stat(parent).st_mode | 0o001)

    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def running(self) -> bool:
        return (self.data_dir / "postmaster.pid").exists() and subprocess.run(
            self._command("pg_ctl", "status", "-D", str(self.data_dir)),
            capture_output=True, check=False,
        ).returncode == 0

    def _forget_a_stale_pid_file(self) -> None:
        """Remove ``postmaster.pid`` when the process it names is alive but is not this
        cluster's server: after a crash and a reboot its PID can belong to any process of the
        server user, and pg_ctl and the server both take that for a running server (pg_ctl
        reports it running, the server refuses to start). Judged from ``/proc`` (Linux);
        elsewhere the file is left to PostgreSQL."""
        pid_file = self.data_dir / "postmaster.pid"
        try:
            pid = int(pid_file.read_text(encoding="utf-8").split("\n", 1)[0])
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):  # no file, no such process, no /proc: nothing to judge
            return
        if Path(os.fsdecode(argv[0])).name == "postgres":
            try:  # a server works in its data directory
                ours = os.path.samefile(f"/proc/{pid}/cwd", self.data_dir)
            except OSError:
                ours = True  # cannot tell: a running server's lock file must stay
        else:
            ours = False
        if not ours:
            pid_file.unlink(missing_ok=True)

    def _command(self, *args: str) -> list[str]:
        command = [str(self.pg_bin / args[0]), *args[1:]]
        user = _server_user()
        return ["runuser", "-u", user, "--", *command] if user else command

    def start(self) -> "EmbeddedPostgres":
        self._prepare_dirs()
        if not self.initialised():
            self._run("initdb", "-D", str(self.data_dir), "--auth=trust", "--encoding=UTF8",
                      "--locale=C", "-U", self.user)
        self._forget_a_stale_pid_file()
        if self.running():
            return self
        options = {
            "listen_addresses": "''",
            "unix_socket_directories": f"'{self.socket_dir}'",
            "port": str(self.port),
            **self.settings,
        }
        option_text = " ".join(f"-c {name}={value}" for name, value in options.items())
        self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data_dir),
                  "-l", str(self.log_file), "-o", option_text)
        return self

    def stop(self, mode: str = "fast") -> None:
        if self.running():
            self._run("pg_ctl", "stop", "-w", "-m", mode, "-D", str(self.data_dir))

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
