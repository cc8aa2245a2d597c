"""Debian's prometheus-pgbouncer-exporter, served over https with basic auth (hactl).

The package's exporter listens on plain http with no login; this runs its collectors behind the
same TLS and bcrypt-hashed login as every other monitoring endpoint. The certificate is read
again on each connection's handshake when it changed, so a renewal needs no restart.
"""
import argparse
import base64
import crypt
import hmac
import os
import ssl
from http.server import HTTPServer

from prometheus_client import REGISTRY
from prometheus_client.exposition import MetricsHandler
from prometheus_pgbouncer_exporter.collectors import (
    DatabasesCollector, ListsCollector, PoolsCollector, StatsCollector)
from prometheus_pgbouncer_exporter.utils import get_connection, get_data_by_named_column


def present_columns_only(collector):
    """The package (1.7) reads columns PgBouncer no longer has (SHOW STATS lost total_requests
    in 1.8): a collector reports only the columns this PgBouncer shows."""

    class Collector(collector):
        def collect(self):
            rows = get_data_by_named_column(self.connection, self.query_parameter)
            have = set(rows[0].keys()) if rows else set()
            self.metrics = {k: v for k, v in collector.metrics.items() if k in have}
            yield from super().collect()

    return Collector


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--listen", required=True)
    p.add_argument("--pgbouncer-port", type=int, required=True)
    p.add_argument("--tls-dir", required=True)
    a = p.parse_args()
    host, port = a.listen.rsplit(":", 1)
    users = {}
    with open(os.path.join(a.tls_dir, "monitoring.htpasswd")) as f:
        for line in f:
            if ":" in line:
                name, hashed = line.rstrip("\n").split(":", 1)
                users[name] = hashed

    connection = get_connection("pgbouncer", a.pgbouncer_port, None)
    for c in (StatsCollector, PoolsCollector, DatabasesCollector):
        REGISTRY.register(present_columns_only(c)(connection=connection, databases=None))
    REGISTRY.register(ListsCollector(connection=connection))

    class Handler(MetricsHandler):
        def do_GET(self):
            if not self.authorized():
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="pgbouncer exporter"')
                self.end_headers()
                return
            super().do_GET()

        def authorized(self):
            header = self.headers.get("Authorization", "")
            if not header.startswith("Basic "):
                return False
            try:
                name, password = base64.b64decode(header[6:]).decode().split(":", 1)
            except Exception:
                return False
            hashed = users.get(name)
            return hashed is not None and hmac.compare_digest(crypt.crypt(password, hashed) or "", hashed)

        def log_message(self, *args):
            pass

    cert = os.path.join(a.tls_dir, "server.crt")
    key = os.path.join(a.tls_dir, "server.key")
    state = {"mtime": None, "ctx": None}

    def context():
        mtime = (os.stat(cert).st_mtime_ns, os.stat(key).st_mtime_ns)
        if mtime != state["mtime"]:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(cert, key)
            state.update(mtime=mtime, ctx=ctx)
        return state["ctx"]

    # One request at a time: the collectors share one connection to PgBouncer.
    class Server(HTTPServer):
        def get_request(self):
            sock, addr = self.socket.accept()
            sock.settimeout(10)
            return context().wrap_socket(sock, server_side=True), addr

        def handle_error(self, request, client_address):
            pass

    Server((host, int(port)), Handler).serve_forever()


if __name__ == "__main__":
    main()
