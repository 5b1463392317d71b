#!/usr/bin/env bash
# Builds the gpupgparser wheel (a dev build: tests only need it to work),
# installs it into a virtual environment under target/ together with what
# the tests use (maturin, pyarrow, pytest, polars, duckdb, dask, distributed,
# pandas; packages the
# system Python already has are reused), and runs the pytest suite against
# throwaway PostgreSQL servers. Arguments go to pytest.
#   crates/python/build.sh            # build, install, test
#   crates/python/build.sh -k stream  # only some tests
# GPUPGPARSER_PG_BIN picks the PostgreSQL binaries (default: 15's).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=${GPUPGPARSER_VENV:-$root/target/python-venv}
wheels=$root/target/wheels
# The same settings as the workspace's other builds (and CI's), so that
# maturin reuses their compiled dependencies.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL-0}
export CARGO_PROFILE_DEV_DEBUG=${CARGO_PROFILE_DEV_DEBUG-line-tables-only}
export CARGO_PROFILE_TEST_DEBUG=${CARGO_PROFILE_TEST_DEBUG-line-tables-only}

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv --system-site-packages "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check \
    'pyarrow>=14' pytest polars duckdb 'dask[dataframe]' distributed pandas
# maturin's script must be the venv's own (`python -m maturin` looks for it there).
if [ ! -x "$venv/bin/maturin" ]; then
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --ignore-installed \
        'maturin>=1.5,<2'
fi
rm -f "$wheels"/gpupgparser-*.whl
"$venv/bin/maturin" build --quiet --locked --profile dev -m "$here/Cargo.toml" \
    -i "$venv/bin/python" -o "$wheels"
"$venv/bin/python" -m pip install -q --disable-pip-version-check \
    --force-reinstall --no-deps "$wheels"/gpupgparser-*.whl
cd "$here"
exec "$venv/bin/python" -m pytest -q tests "$@"
