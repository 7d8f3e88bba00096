"""`dualvec serve`: one process owns every collection's stores and serves them over HTTP.

For applications that cannot import Python, and for stores only one process may open (Qdrant
local mode). Needs the `server` extra (`pip install 'dualvec[server]'`).

Its modules are imported by name (`from dualvec.service.app import create_app`): this package
imports nothing itself, so `dualvec.service.limits` and the CLI load without FastAPI.

- `app`: `create_app`, the FastAPI app (data API, probes, admin API) over one `Migration`.
- `data`, `admin`, `probes`: the routers; `models`: the data API's JSON shapes.
- `errors`: the one error shape and the status of each error; `fields`: which input it names.
- `vectors`: the two wire forms of a vector; `export`: paging through a live collection.
- `state`: what requests share (the migration, limits, exports) and the dependencies that
  hand it out; `fast_json`: request bodies parsed in Rust; `encoding`: answers written so.
- `auth`: the admin API's bearer token; `listen`: where the service may listen;
  `body_limit`, `limits`: what one request may ask; `server`: uvicorn and graceful stop.
"""
