"""`pulse-trt serve`: PULSE over HTTP (FastAPI + uvicorn, the optional extra `pulse-trt[serve]`).

    engine_adapter.py  the one seam to the search engine (submit / progress / cancel)
    app.py             create_app(engine, settings): the FastAPI app (API, page, metrics)
    inputs.py          uploads -> search targets, with the CLI's checks and messages
    jobs.py            per-request state fed by the engine, read by the handlers
    metrics.py         Prometheus metrics (one registry per app)
    server.py          uvicorn on one socket, drain on SIGTERM
    settings.py        ServeSettings: the limits
    static/            the web page (plain HTML + JS, no build step)
"""
