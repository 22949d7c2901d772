"""The API blueprint: routes under ``/api``."""

from flask import Blueprint, jsonify

from covfefe import __version__

api = Blueprint("api", __name__, url_prefix="/api")


@api.get("/health")
def health():
    """Report that the worker is up, and which version of covfefe it runs."""
    return jsonify(status="ok", version=__version__)
