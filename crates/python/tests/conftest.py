"""A throwaway PostgreSQL server for the tests, as crates/localpg starts
them: initdb into a temporary directory (binaries from $GPUPGPARSER_PG_BIN,
else PostgreSQL 15's), run as user postgres when root, listening only on a
Unix socket in that directory; stopped and deleted at the end."""

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

PORT = 5432


def _bin_dir() -> Path:
    for d in (os.environ.get("GPUPGPARSER_PG_BIN"), "/usr/lib/postgresql/15/bin"):
        if d and (Path(d) / "initdb").exists():
            return Path(d)
    pytest.skip("no PostgreSQL server programs (set GPUPGPARSER_PG_BIN)")


class Server:
    """A running server: its connection string and a psql runner."""

    def __init__(self, bin_dir: Path, root: Path):
        self.bin_dir = bin_dir
        self.root = root
        self.data = root / "data"
        self.dsn = f"host={root} port={PORT} user=postgres dbname=postgres"

    def _run(self, *args: str) -> str:
        demote = None
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root.
            pw = pwd.getpwnam("postgres")

            def demote():
                os.setgid(pw.pw_gid)
                os.setuid(pw.pw_uid)

        out = subprocess.run(
            args,
            cwd=self.root,
            env={**os.environ, "LC_ALL": "C"},
            preexec_fn=demote,
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {out.stderr.strip()}")
        return out.stdout

    def start(self):
        self._run(str(self.bin_dir / "initdb"), "-D", str(self.data), "-A", "trust",
                  "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync")
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(
                f"\nlisten_addresses = ''\nunix_socket_directories = '{self.root}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "autovacuum = off\nmax_connections = 64\n"
            )
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l",
                  str(self.root / "server.log"), "-w", "-t", "120", "-o", f"-p {PORT}", "start")

    def stop(self):
        try:
            self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                      "-w", "stop")
        except RuntimeError:
            pass

    def sql(self, statements: str) -> str:
        """Runs SQL with psql (unaligned, tuples only) and returns its output."""
        psql = self.bin_dir / "psql"
        if not psql.exists():
            psql = Path(shutil.which("psql") or "psql")
        return self._run(str(psql), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                         "-h", str(self.root), "-p", str(PORT), "-U", "postgres",
                         "-d", "postgres", "-c", statements)


@pytest.fixture(scope="session")
def pg():
    bin_dir = _bin_dir()
    root = Path(tempfile.mkdtemp(prefix="gpupg-py-"))
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
    server = Server(bin_dir, root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
