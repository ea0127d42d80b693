"""/ui/ pages. Each page is a server-rendered shell (navigation, forms, the CSRF token); its data comes from the
/v1 routes through static/app.js, with the same auth as any API client. Only login/logout live here."""
from __future__ import annotations

import hashlib
from pathlib import Path as FsPath

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from ..api.deps import state
from . import session

HERE = FsPath(__file__).resolve().parent
STATIC_DIR = HERE / "static"
templates = Jinja2Templates(directory=str(HERE / "templates"))

router = APIRouter(prefix="/ui", include_in_schema=False)

PAGES = (("events", "Events"), ("people", "People"), ("unknowns", "Unknowns"), ("cameras", "Cameras"),
         ("system", "System"))
# no inline script or style anywhere: everything the pages run comes from /ui/static
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")


def _asset_version() -> str:
    h = hashlib.sha256()
    for p in sorted(STATIC_DIR.iterdir()):
        h.update(p.read_bytes())
    return h.hexdigest()[:10]


ASSET_V = _asset_version()


class _Auth:
    """Who is looking at a page: csrf is the token the page's script sends with changes ("" when keys are not
    required, where the Origin check alone guards changes)."""

    def __init__(self, csrf: str, session_user: bool):
        self.csrf, self.session_user = csrf, session_user


def _auth(request: Request) -> _Auth | None:
    st = state(request)
    if not st.keys_required:
        return _Auth("", False)
    sess = session.lookup(st, request.cookies.get(session.COOKIE))
    return _Auth(sess.csrf, True) if sess else None


def _safe_next(nxt: str | None) -> str:
    """Only a path of this UI: never an open redirect."""
    if nxt and nxt.startswith("/ui/") and not nxt.startswith("//") and "\\" not in nxt:
        return nxt
    return "/ui/events"


def _headers() -> dict[str, str]:
    return {"Content-Security-Policy": CSP, "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin",
            "Cache-Control": "no-store"}


def _render(request: Request, name: str, page: str, auth: _Auth, status: int = 200, **ctx) -> HTMLResponse:
    return templates.TemplateResponse(request, name, {"page": page, "pages": PAGES, "csrf": auth.csrf,
                                                      "session_user": auth.session_user, "v": ASSET_V, **ctx},
                                      status_code=status, headers=_headers())


async def _page(request: Request, name: str, page: str, **ctx) -> Response:
    auth = await run_in_threadpool(_auth, request)
    if auth is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/ui/login?next={_quote(target)}", status_code=303, headers=_headers())
    return _render(request, name, page, auth, **ctx)


def _quote(s: str) -> str:
    from urllib.parse import quote

    return quote(s, safe="")


@router.get("")
@router.get("/")
async def ui_root():
    return RedirectResponse("/ui/events", status_code=307)


@router.get("/login")
async def login_form(request: Request, next: str | None = Query(None, max_length=2000)):  # noqa: A002
    if not state(request).keys_required:
        return RedirectResponse(_safe_next(next), status_code=303)
    return _render(request, "login.html", "login", _Auth("", False), next=_safe_next(next), error=None)


@router.post("/login")
async def login(request: Request, key: str = Form("", max_length=300),
                next: str = Form("/ui/events", max_length=2000)):  # noqa: A002
    st = state(request)
    nxt = _safe_next(next)
    if session.cross_origin(request):
        return _render(request, "login.html", "login", _Auth("", False), status=403, next=nxt,
                       error="refused: this login form was posted from another site")
    if not st.keys_required:
        return RedirectResponse(nxt, status_code=303)
    rec = await run_in_threadpool(st.keys.verify, key)
    if rec is None:
        return _render(request, "login.html", "login", _Auth("", False), status=401, next=nxt,
                       error="that API key is wrong or revoked")
    token = await run_in_threadpool(session.create, st, rec.id)
    resp = RedirectResponse(nxt, status_code=303, headers=_headers())
    session.set_cookie(resp, request, token)
    return resp


@router.post("/logout")
async def logout(request: Request, csrf: str = Form("", max_length=200)):
    st = state(request)
    token = request.cookies.get(session.COOKIE)
    sess = await run_in_threadpool(session.lookup, st, token)
    if sess is not None and (session.cross_origin(request) or not session.csrf_ok(sess, csrf)):
        return Response("refused: missing CSRF token", status_code=403, media_type="text/plain")
    await run_in_threadpool(session.end, st, token)
    resp = RedirectResponse("/ui/login", status_code=303)
    resp.delete_cookie(session.COOKIE, path="/")
    return resp


@router.get("/events")
async def events_page(request: Request):
    return await _page(request, "events.html", "events")


@router.get("/events/{event_id}")
async def event_page(request: Request, event_id: str = Path(pattern=r"^[0-9a-f]{1,64}$")):
    return await _page(request, "event.html", "events", event_id=event_id)


@router.get("/people")
async def people_page(request: Request):
    return await _page(request, "people.html", "people")


@router.get("/unknowns")
async def unknowns_page(request: Request):
    return await _page(request, "unknowns.html", "unknowns")


@router.get("/cameras")
async def cameras_page(request: Request):
    return await _page(request, "cameras.html", "cameras")


@router.get("/system")
async def system_page(request: Request):
    return await _page(request, "system.html", "system")
