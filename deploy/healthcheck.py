"""Container health check with no curl in the image: GET a path on localhost, healthy on 200.

    python3 -I -S healthcheck.py PORT [PATH]

Run with -I -S so each check starts in a few milliseconds (it runs every couple of seconds in
every replica). Exit 0 healthy, 1 not.
"""

import socket
import sys


def main() -> int:
    port = int(sys.argv[1])
    path = sys.argv[2] if len(sys.argv) > 2 else "/healthz"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
            conn.sendall(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
            status = conn.recv(64).split(b" ", 2)
    except OSError as exc:
        print(f"unhealthy: {exc}")
        return 1
    return 0 if len(status) > 1 and status[1] == b"200" else 1


if __name__ == "__main__":
    sys.exit(main())
