"""The covfefe-flow web API: a Flask application factory, run by gunicorn as ``serve:create_app()``.

For now the API only reports its health; the generation routes arrive with the model.
"""

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from serve.api import api


def _json_error(error: HTTPException):
    """Answer every HTTP error with a one-line JSON body instead of an HTML page."""
    return jsonify(error=f"{error.name}: {error.description}"), error.code


def create_app(test_config: dict | None = None) -> Flask:
    """Create and configure the API application."""
    app = Flask(__name__)
    app.config.from_mapping(JSON_SORT_KEYS=False)
    if test_config is None:
        app.config.from_prefixed_env("COVFEFE")
    else:
        app.config.update(test_config)
    app.register_blueprint(api)
    app.register_error_handler(HTTPException, _json_error)
    return app
