"""Human review through the gateway: the review queue's API (for our page or any labelling
tool) and the review page itself.

* ``GET /v1/jobs/{id}/reviews``: pending items (soonest deadline first) and the counters;
* ``GET /v1/jobs/{id}/reviews/{item}``: one item with the prompt, the response, the
  verifier's results and the feedback so far;
* ``POST /v1/jobs/{id}/reviews/{item}``: ``{"verdict", "feedback"?, "solution"?, "reviewer"?}``;
  404 unknown item, 409 already reviewed, 410 expired, 422 bad body.

These need the bearer token like every API route. ``GET /review/{id}`` serves the page:
static HTML and JavaScript holding no data, so it is served without the token; the page
asks for the token, keeps it in the tab's ``sessionStorage`` and sends it as an
``Authorization`` header on every data request (which are refused without it). The
queue itself lives in Redis (``services.feedback.review_queue``).
"""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, HTTPException, Path, Query
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field

from services.feedback.review_queue import ReviewError, ReviewQueue
from services.feedback.sources.human import Review

PAGE_DIR = FilePath(__file__).with_name("review_page")
ASSETS = {"review.js": "text/javascript", "review.css": "text/css"}
PAGE_HEADERS = {
    # Everything is our own file; model output is only ever inserted as text.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
        "form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
ItemId = Annotated[str, Path(max_length=64, description="review item id, e.g. 3f2a9c0d1e2b4a5c-0")]


class ReviewSummary(BaseModel):
    item: str
    group_id: str
    task_id: str
    index: int = Field(description="the response's index in its group")
    deadline: float = Field(description="unix seconds (Redis clock)")
    seconds_left: float
    prompt: str = Field(description="first 300 characters")
    reward: float | None
    success: bool | None


class ReviewList(BaseModel):
    job_id: str
    items: list[ReviewSummary]
    stats: dict[str, int] = Field(
        description="groups_parked, items_parked, items_reviewed, items_accepted, items_rejected, "
        "items_expired, groups_released, groups_expired, pending_items, parked_groups"
    )


class TestView(BaseModel):
    name: str
    status: str
    message: str


class ReviewItem(BaseModel):
    item: str
    job_id: str
    group_id: str
    task_id: str
    verifier: str
    index: int
    group_size: int
    state: Literal["pending", "reviewed", "expired"]
    deadline: float
    seconds_left: float
    prompt: str
    response: str
    finish_reason: str
    reward: float | None
    success: bool | None
    tests: list[TestView]
    feedback: str = Field(description="the other sources' feedback text (environment, external)")
    solution: str = Field(description="the automatic demonstration (sibling, reference), if any")
    review: dict[str, Any] | None = Field(description="the submitted review, once reviewed")


class ReviewAccepted(BaseModel):
    item: str
    state: Literal["reviewed"]
    group_complete: bool | None = Field(
        description="every selected response of the group is reviewed: it goes on to the teacher now"
    )
    duplicate: bool = Field(description="the same review was already recorded (a retried request)")


class Problem(BaseModel):
    detail: str


def add_review_routes(app: FastAPI, *, auth: list, get_job, bus) -> None:
    """Mount the review API and page on ``app``; ``bus`` None = no Redis (503 on the API)."""
    router = APIRouter()
    unauthorized = {401: {"model": Problem, "description": "missing or wrong bearer token"}}

    def queue(job_id: str) -> ReviewQueue:
        get_job(job_id)
        if bus is None:
            raise HTTPException(503, "this gateway runs without a bus (run_jobs=false): no review queue")
        return ReviewQueue(bus, job_id)

    def fail(exc: ReviewError) -> JSONResponse:
        return JSONResponse(status_code=exc.status, content={"detail": str(exc)})

    @router.get("/v1/jobs/{job_id}/reviews", dependencies=auth, response_model=ReviewList,
                responses={**unauthorized, 404: {"model": Problem}})  # fmt: skip
    def list_reviews(
        job_id: Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,128}$")],
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    ):
        """Items waiting for a reviewer, soonest deadline first, and the queue's counters."""
        q = queue(job_id)
        return {"job_id": job_id, "items": q.pending(limit, offset), "stats": q.stats()}

    @router.get("/v1/jobs/{job_id}/reviews/{item}", dependencies=auth, response_model=ReviewItem,
                responses={**unauthorized, 404: {"model": Problem}})  # fmt: skip
    def get_review(job_id: Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,128}$")], item: ItemId):
        """One item: prompt, response, verifier results, feedback so far, and its state."""
        try:
            return queue(job_id).item(item)
        except ReviewError as exc:
            return fail(exc)

    @router.post(
        "/v1/jobs/{job_id}/reviews/{item}",
        dependencies=auth,
        response_model=ReviewAccepted,
        responses={
            **unauthorized,
            404: {"model": Problem, "description": "no such job or item"},
            409: {"model": Problem, "description": "already reviewed (with another answer)"},
            410: {"model": Problem, "description": "the deadline passed; the group went on without it"},
        },
    )
    def submit_review(
        job_id: Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,128}$")], item: ItemId, review: Review
    ):
        """Submit a review; it is merged into the group's feedback for the teacher once every
        selected response of the group is reviewed (or at the deadline)."""
        try:
            return queue(job_id).submit(item, review)
        except ReviewError as exc:
            return fail(exc)

    @router.get("/review/{job_id}", include_in_schema=False)
    def review_page(job_id: Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,128}$")]):
        return FileResponse(PAGE_DIR / "index.html", media_type="text/html", headers=PAGE_HEADERS)

    @router.get("/review/static/{name}", include_in_schema=False)
    def review_asset(name: str):
        if name not in ASSETS:
            raise HTTPException(404, f"no asset {name!r}")
        return FileResponse(PAGE_DIR / name, media_type=ASSETS[name], headers=PAGE_HEADERS)

    app.include_router(router)
