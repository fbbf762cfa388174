"""HTTP serving of a :class:`~catrec.serve.recommender.Recommender` with FastAPI.

    POST /recommend   one history ({"history": [...]}) or a batch ({"histories": [[...], ...]})
    GET  /health      liveness
    GET  /info        model, dataset hash, git commit, item count, server limits
    GET  /docs        OpenAPI documentation (schema at /openapi.json)

Concurrent requests are micro-batched: a worker collects the requests that arrive within
``batch_wait_ms`` of the first (up to ``max_batch`` histories) and scores them in one forward
pass, in one inference thread, so the event loop keeps accepting requests meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator

from catrec.errors import ConfigError
from catrec.serve.recommender import Recommendations, Recommender
from catrec.utils import DuplicateKeyError, no_duplicate_keys

ItemId = StrictStr | StrictInt


@dataclass(frozen=True)
class ServerLimits:
    """Request limits and micro-batching settings of one server.

    Attributes:
        max_history: most items one history may hold (longer requests get 422; the model itself
            reads the most recent ``max_len`` known items).
        max_k: largest ``k``.
        max_histories: most histories in one batch request.
        max_body_bytes: largest request body (larger gets 413).
        max_batch: most histories scored in one forward pass.
        batch_wait_ms: how long the worker waits for more requests after the first.
    """

    max_history: int = 1000
    max_k: int = 1000
    max_histories: int = 1000
    max_body_bytes: int = 1 << 20
    max_batch: int = 256
    batch_wait_ms: float = 2.0


class RecommendRequest(BaseModel):
    """One history or a batch; item ids are the raw ids of the dataset file, oldest first."""

    model_config = ConfigDict(extra="forbid")

    history: list[ItemId] | None = Field(
        None, description="one history, oldest first", examples=[["1", "2", "3"]]
    )
    histories: list[list[ItemId]] | None = Field(None, description="several histories")
    k: StrictInt = Field(10, ge=1, description="length of each list (at most the server's max_k)")
    exclude_history: StrictBool = Field(
        True, description="never recommend the items of the (most recent max_len) history"
    )
    strict: StrictBool = Field(False, description="reject unknown item ids instead of dropping")

    @model_validator(mode="after")
    def _one_of(self) -> RecommendRequest:
        if (self.history is None) == (self.histories is None):
            raise ValueError("give exactly one of 'history' and 'histories'")
        return self


class Recommendation(BaseModel):
    """A top-k list, best first."""

    items: list[str] = Field(description="raw item ids, best first")
    scores: list[float] = Field(description="model scores (training counts when fallback)")
    fallback: bool = Field(description="no known history item: the most popular training items")
    unknown: list[str] = Field(description="history ids that are not items of the model (dropped)")


class BatchRecommendation(BaseModel):
    """One list per history of the request, in request order."""

    results: list[Recommendation]


@dataclass
class _Job:
    histories: list[list[str | int]]
    k: int
    exclude_history: bool
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    """Collects concurrent requests for a few milliseconds and scores them in one pass.

    All model calls run in one worker thread (torch inference is not re-entered concurrently).
    """

    def __init__(self, recommender: Recommender, max_batch: int, wait_ms: float) -> None:
        self.recommender = recommender
        self.max_batch = max_batch
        self.wait_s = wait_ms / 1000.0
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="catrec-infer")
        self._task: asyncio.Task | None = None
        self.batches = 0  # forward passes run (for /info and tests)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._pool.shutdown(wait=True)

    async def submit(
        self, histories: list[list[str | int]], k: int, exclude_history: bool
    ) -> list[Recommendations]:
        """Queue ``histories`` and wait for their lists (one per history)."""
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(histories, k, exclude_history, future))
        return await future

    async def _collect(self) -> list[_Job]:
        """The next job, plus those that arrive within ``wait_s`` (up to ``max_batch``)."""
        jobs = [await self._queue.get()]
        if self.wait_s > 0:
            await asyncio.sleep(self.wait_s)
        size = len(jobs[0].histories)
        while size < self.max_batch and not self._queue.empty():
            job = self._queue.get_nowait()
            jobs.append(job)
            size += len(job.histories)
        return jobs

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._collect()
            for exclude in (True, False):
                group = [j for j in jobs if j.exclude_history is exclude and not j.future.done()]
                if group:
                    await self._score(loop, group, exclude)

    async def _score(self, loop: asyncio.AbstractEventLoop, jobs: list[_Job], exclude: bool):
        histories = [h for j in jobs for h in j.histories]
        k = max(j.k for j in jobs)
        try:
            lists = await loop.run_in_executor(
                self._pool,
                lambda: self.recommender.recommend_batch(
                    histories, k, exclude_history=exclude, warn=False
                ),
            )
        except Exception as exc:  # handed to each waiting request, which answers 500
            for j in jobs:
                if not j.future.done():
                    j.future.set_exception(exc)
            return
        self.batches += 1
        start = 0
        for j in jobs:
            mine = lists[start : start + len(j.histories)]
            start += len(j.histories)
            if not j.future.done():  # the client may have gone away
                j.future.set_result([_head(r, j.k) for r in mine])


def _head(r: Recommendations, k: int) -> Recommendations:
    """The first ``k`` of a longer list (a top-k is the prefix of a top-k' for k' > k)."""
    return Recommendations(r[:k], fallback=r.fallback, unknown=r.unknown, n_used=r.n_used)


class BodyLimit:
    """ASGI middleware: answer 413 to request bodies over ``max_bytes`` (chunked ones too).

    The body is read (and, past the limit, discarded) before answering, so that a client still
    sending gets the 413 instead of a reset connection.
    """

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # disconnected
                return
            size += len(message.get("body", b""))
            if size <= self.max_bytes:
                chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        if size > self.max_bytes:
            response = JSONResponse(
                {"detail": f"request body of {size} bytes exceeds the limit of {self.max_bytes}"},
                status_code=413,
            )
            await response(scope, receive, send)
            return
        body = b"".join(chunks)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _no_duplicate_keys(request: Request) -> None:
    """400 for a JSON body that gives a key twice (FastAPI's parser would keep the last value)."""
    try:
        json.loads(await request.body(), object_pairs_hook=no_duplicate_keys)
    except DuplicateKeyError as exc:
        raise HTTPException(400, f"malformed JSON body: key {exc.args[0]!r} given twice") from None
    except ValueError:  # not JSON at all: FastAPI's own parser answers (400, see the handler)
        pass


def create_app(recommender: Recommender, limits: ServerLimits | None = None) -> FastAPI:
    """The FastAPI application serving ``recommender`` within ``limits``.

    Status codes: 400 malformed JSON (also a key given twice), 413 body too large, 422 invalid
    request (wrong types, ``k`` out of range, a history too long, too many histories, unknown ids
    with ``strict``), 500 the model failed (e.g. NaN scores).
    """
    limits = limits or ServerLimits()
    batcher = MicroBatcher(recommender, limits.max_batch, limits.batch_wait_ms)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    info = {k: v for k, v in recommender.info.items() if k != "run_dir"}  # no server paths
    app = FastAPI(
        title="catrec recommender",
        version=str(info.get("catrec_version", "")),
        description=(
            f"Next-item recommendations from a trained {info.get('model', '')} "
            f"({info.get('mode', '')}) over {recommender.n_items} items. Item ids are the raw ids "
            "of the dataset file."
        ),
        lifespan=lifespan,
    )
    app.state.batcher = batcher
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        bad_json = [e for e in errors if e.get("type") == "json_invalid"]
        if bad_json:
            ctx = bad_json[0].get("ctx", {})
            return JSONResponse(
                {"detail": f"malformed JSON body: {ctx.get('error', 'cannot parse')}"},
                status_code=400,
            )
        detail = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
            for e in errors
        ]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: answers as long as the server accepts requests."""
        return {"status": "ok"}

    @app.get("/info")
    async def get_info() -> dict[str, Any]:
        """The served run (model, dataset hash, git commit, item count) and the server limits."""
        return {
            **info,
            "limits": dataclasses.asdict(limits),
            "forward_passes": batcher.batches,
        }

    @app.post(
        "/recommend",
        response_model=Recommendation | BatchRecommendation,
        responses={
            400: {"description": "malformed JSON"},
            413: {"description": "request body too large"},
            422: {"description": "invalid request"},
        },
    )
    async def recommend(
        req: RecommendRequest, _: None = Depends(_no_duplicate_keys)
    ) -> Recommendation | BatchRecommendation:
        """Top-k raw item ids and scores for one history or a batch of histories."""
        histories = [req.history] if req.history is not None else req.histories or []
        if req.k > limits.max_k:
            raise HTTPException(422, f"k = {req.k} exceeds this server's max_k {limits.max_k}")
        if len(histories) > limits.max_histories:
            raise HTTPException(
                422,
                f"{len(histories)} histories exceed this server's max_histories "
                f"{limits.max_histories}",
            )
        for i, h in enumerate(histories):
            if len(h) > limits.max_history:
                raise HTTPException(
                    422,
                    f"history {i} has {len(h)} items; this server accepts at most "
                    f"{limits.max_history} (the model reads the most recent "
                    f"{recommender.max_len})",
                )
        if req.strict:
            unknown = [t for h in histories for t in recommender.unknown_ids(h)]
            if unknown:
                shown = ", ".join(repr(t) for t in unknown[:10])
                more = f" (and {len(unknown) - 10} more)" if len(unknown) > 10 else ""
                raise HTTPException(422, f"unknown item ids: {shown}{more}")
        if not histories:
            return BatchRecommendation(results=[])
        lists = await batcher.submit(histories, req.k, req.exclude_history)
        out = [Recommendation(**r.to_dict()) for r in lists]
        return out[0] if req.history is not None else BatchRecommendation(results=out)

    return app


def serve(
    recommender: Recommender,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    limits: ServerLimits | None = None,
    root_path: str = "",
    proxy_headers: bool = False,
    forwarded_allow_ips: str | None = None,
    access_log: bool = True,
    log_level: str = "info",
) -> None:
    """Run the app with uvicorn until interrupted (Ctrl-C / SIGTERM stop it cleanly).

    Raises:
        ConfigError: the address cannot be bound (e.g. the port is in use).
    """
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port"
            ) from None
    import uvicorn

    uvicorn.run(
        create_app(recommender, limits),
        host=host,
        port=port,
        root_path=root_path,
        proxy_headers=proxy_headers,
        forwarded_allow_ips=forwarded_allow_ips,
        access_log=access_log,
        log_level=log_level,
    )
