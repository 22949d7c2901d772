"""The web page (``webapp/``): ``/`` and its static files, for ``make demo`` and small installs.

In production nginx serves the same folder and Flask answers only ``/api``; with
``COVFEFE_WEBAPP_DIR`` unset and no ``webapp/`` beside the package, no page is served.
"""

from pathlib import Path

from flask import Blueprint, current_app, send_from_directory
from werkzeug.routing import PathConverter

DEFAULT_WEBAPP = Path(__file__).resolve().parent.parent / "webapp"

web = Blueprint("web", __name__)


def webapp_dir(app) -> Path | None:
    """The folder to serve: WEBAPP_DIR, else the repository's webapp/ when it is there."""
    configured = app.config.get("WEBAPP_DIR")
    if configured:
        folder = Path(configured)
        if not (folder / "index.html").is_file():
            raise SystemExit(f"covfefe serve: WEBAPP_DIR {folder} has no index.html")
        return folder
    return DEFAULT_WEBAPP if (DEFAULT_WEBAPP / "index.html").is_file() else None


@web.get("/")
def index():
    return send_from_directory(current_app.extensions["covfefe.webapp"], "index.html")


class PagePathConverter(PathConverter):
    """A path outside ``/api``: so that ``GET`` on a POST-only API route is a 405 naming the
    methods it allows, not a 404 from this catch-all."""

    regex = r"(?!api(?:/|$))[^/].*?"


@web.record_once
def _register_converter(state):
    state.app.url_map.converters["page_path"] = PagePathConverter


@web.get("/<page_path:filename>")
def static_file(filename: str):
    """A file of the page (404 as JSON for anything else; never a path outside the folder)."""
    return send_from_directory(current_app.extensions["covfefe.webapp"], filename)
