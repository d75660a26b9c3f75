"""GET /: the browser playground, a single page of static files shipped in the package.

The page and its assets hold no secrets, so they answer without a key (a browser cannot send
one when it opens a URL); the API calls the page makes carry the key typed into its key field.
"""

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

PLAYGROUND_DIR = Path(__file__).resolve().parents[2] / "playground"  # server/playground
PAGE_PATHS = ("/", "/playground/app.js", "/playground/style.css")

# Only the page's own files run; an injected <script> or inline handler would not. The page
# renders model text as text anyway: this is the second line of defence.
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",  # revalidate, so a new server version's page is never stale
}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def page() -> FileResponse:
    """The playground page."""
    return _file("index.html")


@router.get("/playground/app.js")
async def script() -> FileResponse:
    """The page's script: models, settings, streaming, Stop."""
    return _file("app.js")


@router.get("/playground/style.css")
async def style() -> FileResponse:
    """The page's style sheet."""
    return _file("style.css")


def _file(name: str) -> FileResponse:
    return FileResponse(PLAYGROUND_DIR / name, headers=_HEADERS)
