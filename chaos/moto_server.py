"""``python -m chaos.moto_server PORT``: moto's S3 over HTTP on 127.0.0.1:PORT,
one request at a time.

moto checks If-Match / If-None-Match and then writes in two steps, so two
racing conditional PUTs could both pass in a threaded server; real S3 makes
each conditional write atomic. Serving one request at a time restores that
(as adapters/s3/tests/s3_testing.py does for the test suite), so a double
claim seen by the chaos run is the store's, not moto's.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def serialised(app: WSGIApp) -> WSGIApp:
    lock = threading.Lock()

    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        with lock:
            return list(app(environ, start_response))

    return serve


def main(port: int) -> None:
    app = DomainDispatcherApplication(create_backend_app)
    server = make_server(
        "127.0.0.1", port, serialised(app), threaded=True, request_handler=MotoRequestHandler
    )
    print(f"moto S3 on http://127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(int(sys.argv[1]))
