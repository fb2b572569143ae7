"""The API server of the API benchmark: crohooks' app plus one bare endpoint.

Run as ``python -m bench.server PORT`` with the usual ``CROHOOKS_*`` environment. It
serves ``crohooks.app.create_app`` exactly as ``crohooks serve --no-worker`` does
(uvicorn, uvloop, httptools, no access log), with ``GET /bench/constant`` added: no
authentication, no database, a constant JSON body of a WebhookModel's size. Whatever
``GET /hooks/{id}`` costs beyond it is crohooks' own work.
"""

from __future__ import annotations

import sys

import uvicorn

from crohooks.api.wire import CroJSONResponse
from crohooks.app import create_app
from crohooks.logs import configure_logging
from crohooks.settings import Settings

CONSTANT = {
    "deleted_at": None,
    "events": ["Job"],
    "id": 1,
    "last_http_fail": None,
    "last_http_success": "2022-08-20T01:45:38.518903",
    "secret": "VGhlIGxhenkgYnJvd24gZG9n",
    "url": "http://127.0.0.1:9797/hook/0",
}


async def constant() -> CroJSONResponse:
    return CroJSONResponse(CONSTANT)


def main() -> None:
    port = int(sys.argv[1])
    settings = Settings()
    configure_logging(settings)
    app = create_app(settings, run_worker=False)
    app.add_api_route("/bench/constant", constant, methods=["GET"])
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        loop="uvloop",
        http="httptools",
    )


if __name__ == "__main__":
    main()
