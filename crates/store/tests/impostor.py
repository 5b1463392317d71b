#!/usr/bin/env python3
"""A process of another user squatting on a store socket path, for the
tests (run as `nobody` through setpriv): it listens on SOCKET, prints
"ready" once it does, and appends every byte any client sends it to RECORD,
until it is killed. The tests assert RECORD stays empty.

    impostor.py SOCKET RECORD
"""

import os
import socket
import sys

path, record = sys.argv[1], sys.argv[2]
# Open to everyone, as a squatter makes it.
os.umask(0)
with open(record, "wb"):
    pass
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(path)
server.listen(16)
print("ready", flush=True)
while True:
    conn, _ = server.accept()
    # A client that would send something does so at once; a few seconds
    # per connection keep a client that waits for an answer from hanging.
    conn.settimeout(3)
    try:
        while True:
            data = conn.recv(65536)
            if not data:
                break
            with open(record, "ab") as f:
                f.write(data)
    except OSError:
        pass
    conn.close()
