"""Ctrl-C in Python cancels cleanly: a process reading from a slow query
gets SIGINT while it waits in Rust (connecting, planning, waiting for a
batch, writing a file); it must raise KeyboardInterrupt promptly, and the
server must be left with no statement of it running."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

# What the child runs once it printed "started"; {dsn} and {path} are
# filled in. Each waits in Rust on a server that is sleeping.
CASES = {
    # The first batch of a query that sleeps: waiting for a batch.
    "read_sql_iterate": "for b in gpupgparser.read_sql(dsn, 'select 1 as s from pg_sleep(60)'): pass",
    # read_all() of a table whose every row sleeps, on parallel connections.
    "read_table_read_all": (
        "gpupgparser.read_table(dsn, 'sleepy', where='pg_sleep(0.05) is not null')"
        ".read_all()"
    ),
    # Handing the stream to pyarrow is out of scope (the consumer waits):
    # export() waits for a whole file.
    "export": (
        "gpupgparser.export(dsn, 'sleepy', path, where='pg_sleep(0.05) is not null')"
    ),
}

CHILD = """
import sys, gpupgparser
dsn, path = sys.argv[1], sys.argv[2]
print("started", flush=True)
{body}
print("finished", flush=True)
"""


@pytest.fixture(scope="module")
def sleepy(pg):
    # Enough rows that sleeping 50 ms on each takes minutes.
    pg.sql("drop table if exists sleepy; create table sleepy as "
           "select g as id from generate_series(1, 20000) g;")
    return pg


def our_statements(pg) -> list[str]:
    """The statements running on the server other than this check's own
    and the server's background workers'."""
    out = pg.sql(
        "select query from pg_stat_activity where pid <> pg_backend_pid() "
        "and backend_type = 'client backend' and state <> 'idle'"
    )
    return [line for line in out.splitlines() if line.strip()]


@pytest.mark.parametrize("case", sorted(CASES))
def test_ctrl_c_cancels(sleepy, tmp_path, case):
    path = tmp_path / "out.parquet"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(body=textwrap.dedent(CASES[case])),
         sleepy.dsn, str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert child.stdout.readline().strip() == "started"
        # Long enough for the statements to be running on the server.
        deadline = time.monotonic() + 10
        while not our_statements(sleepy):
            assert time.monotonic() < deadline, "the child's statements never started"
            assert child.poll() is None, child.stderr.read()
            time.sleep(0.1)
        time.sleep(0.5)
        sent = time.monotonic()
        os.kill(child.pid, signal.SIGINT)
        _, err = child.communicate(timeout=10)
        took = time.monotonic() - sent
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode != 0
    assert "KeyboardInterrupt" in err, err
    assert "gpupgparser" not in err.strip().splitlines()[-1], err
    assert took < 2.0, f"exited {took:.2f} s after SIGINT"
    # The cancel reached the server: nothing of the child still runs.
    deadline = time.monotonic() + 3
    while (left := our_statements(sleepy)):
        assert time.monotonic() < deadline, f"still running on the server: {left}"
        time.sleep(0.1)
    # An interrupted export leaves no file.
    assert not path.exists()
