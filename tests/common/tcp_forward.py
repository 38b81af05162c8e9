#!/usr/bin/env python3
"""Test helper: serve 127.0.0.1 TCP in front of a Docker Engine API unix socket.

    tcp_forward.py UNIX_SOCKET PORT_FILE [--tls CERT KEY CA]

With --tls the listener terminates TLS and *requires* a client certificate
signed by CA (mutual TLS, as `dockerd --tlsverify` does); without it bytes are
forwarded as they come. The port is chosen by the OS and written to PORT_FILE
once the socket listens. Refused handshakes are logged to stderr as
`refused: REASON` so a test can show the server side said no.
"""

import os
import select
import socket
import ssl
import sys
import threading


def pump(client, upstream):
    """Copies bytes both ways until either side closes."""
    try:
        while True:
            # Bytes already decrypted inside the TLS object are invisible to select.
            if isinstance(client, ssl.SSLSocket) and client.pending():
                ready = [client]
            else:
                ready, _, _ = select.select([client, upstream], [], [])
            for s in ready:
                data = s.recv(65536)
                if not data:
                    return
                (upstream if s is client else client).sendall(data)
    except (OSError, ssl.SSLError):
        return
    finally:
        for s in (client, upstream):
            try:
                s.close()
            except OSError:
                pass


def serve(conn, ctx, target):
    if ctx is not None:
        conn.settimeout(10)
        try:
            conn = ctx.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError) as e:
            print(f"refused: {e}", file=sys.stderr, flush=True)
            conn.close()
            return
        conn.settimeout(None)
        peer = conn.getpeercert() or {}
        subject = dict(x[0] for x in peer.get("subject", ()))
        print(f"accepted: {subject.get('commonName', '?')}", file=sys.stderr, flush=True)
    up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        up.connect(target)
    except OSError as e:
        print(f"upstream: {e}", file=sys.stderr, flush=True)
        conn.close()
        up.close()
        return
    pump(conn, up)


def main():
    target, port_file = sys.argv[1], sys.argv[2]
    ctx = None
    if len(sys.argv) > 3:
        if sys.argv[3] != "--tls" or len(sys.argv) != 7:
            sys.exit(__doc__)
        cert, key, ca = sys.argv[4:7]
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        ctx.load_verify_locations(ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(listener.getsockname()[1]))
    # Renamed into place so the reader never sees a half-written port.
    os.rename(port_file + ".tmp", port_file)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn, ctx, target), daemon=True).start()


if __name__ == "__main__":
    main()
