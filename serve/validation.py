"""Request validation: every field named, typed and bounded; a mistake is a 400 naming it.

Text is checked once, where it enters (the query string, the JSON body): it must be UTF-8
and hold no lone surrogate (``\\ud800`` escaped in JSON), which no later stage could encode.
"""

import json
import math
import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from flask import Request

from covfefe.errors import UserError


class RequestError(UserError):
    """A malformed request: answered with 400 and ``{"error": message}``, plus ``"field"``
    when one field is to blame (so that a form can show the message next to it)."""

    status = 400

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Field:
    """One JSON field: its type, bounds and default (``required`` when there is none)."""

    kind: type
    default: object = None
    required: bool = False
    low: float | None = None  # inclusive unless low_open
    high: float | None = None  # inclusive
    low_open: bool = False
    max_length: int | None = None  # for strings
    nullable: bool = True  # JSON null means the default (False: null is refused)

    def describe(self) -> str:
        if self.kind is str:
            return f"a string of at most {self.max_length} characters"
        kind = "a whole number" if self.kind is int else "a number"
        low = "" if self.low is None else f"{'above' if self.low_open else 'at least'} {self.low}"
        high = "" if self.high is None else f"at most {self.high}"
        bounds = " and ".join(part for part in (low, high) if part)
        return f"{kind} {bounds}".strip()

    def check(self, name: str, value):
        wrong = RequestError(f"{name} must be {self.describe()}, not {value!r}"[:300], name)
        if self.kind is str:
            if not isinstance(value, str):
                raise wrong
            if self.max_length is not None and len(value) > self.max_length:
                raise RequestError(f"{name} is {len(value)} characters long; it must be at "
                                   f"most {self.max_length}", name)
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise wrong
        if isinstance(value, float) and not math.isfinite(value):
            raise wrong
        if self.kind is int and not isinstance(value, int):  # 3.0 too: the schema says integer
            raise wrong
        # Bounds compare exactly (an int of 400 digits is fine to compare, not to float()).
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            raise wrong
        if self.high is not None and value > self.high:
            raise wrong
        return self.kind(value)


# Plain ASCII numbers only: int() and float() would also take "1_6", full-width digits, "nan".
_INTEGER = re.compile(r"[+-]?[0-9]{1,30}")
_NUMBER = re.compile(r"[+-]?(?:[0-9]{1,30}(?:\.[0-9]{0,30})?|\.[0-9]{1,30})"
                     r"(?:[eE][+-]?[0-9]{1,3})?")


def _is_whole_text(value) -> bool:
    """False for a string that cannot be written as UTF-8: a lone surrogate, from JSON's
    ``\\ud800`` escape or from a byte of the body that is not UTF-8 (see `_json_body`)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_body(request: Request):
    """The body parsed as JSON; None when it is not JSON. Bytes that are not UTF-8 become
    lone surrogates (``surrogateescape``), so that the field holding them is named; UTF-16
    and UTF-32, which json.loads would detect and take from bytes, are not JSON (RFC 8259)."""
    text = request.get_data(cache=True).decode("utf-8", "surrogateescape")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested too deep for the parser
        return None


def read_json(request: Request, fields: dict[str, Field], *, ignore_unknown: bool = False) -> dict:
    """Return the request's JSON object with every field checked and defaults filled in
    (fields it does not know are refused, or left out with ``ignore_unknown``)."""
    if not request.is_json:
        raise RequestError("send a JSON object with Content-Type: application/json")
    body = _json_body(request)
    if body is None:
        raise RequestError("the request body is not valid JSON")
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    for name in fields:
        if isinstance(body.get(name), str) and not _is_whole_text(body[name]):
            raise RequestError(f"{name} is not whole UTF-8 text: it holds a lone surrogate "
                               "(an escape such as \\ud800, half of a character) or bytes "
                               "that are not UTF-8", name)
    unknown = sorted(set(body) - set(fields))
    if unknown and not ignore_unknown:
        raise RequestError(f"unknown field {unknown[0]!r}; the fields are "
                           f"{', '.join(fields)}")
    values = {}
    for name, field in fields.items():
        if name in body and (body[name] is not None or not field.nullable):
            values[name] = field.check(name, body[name])
        elif field.required:
            raise RequestError(f"{name} is required", name)
        else:
            values[name] = field.default
    return values


def _query(request: Request) -> dict[str, str]:
    """The query string's parameters (the first of each name), decoded as strict UTF-8:
    Werkzeug keeps ``%FF`` as the literal text "%FF" and lets surrogates through."""
    parameters = {}
    for pair in request.query_string.split(b"&"):
        if not pair:
            continue
        raw_name, _, raw_value = pair.partition(b"=")
        try:
            name = unquote_to_bytes(raw_name.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError("a parameter's name is not UTF-8 text") from None
        try:
            value = unquote_to_bytes(raw_value.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError(f"{name} is not UTF-8 text (percent-escapes such as %FF must "
                               "spell UTF-8 bytes of whole characters)", name) from None
        parameters.setdefault(name, value)
    return parameters


def read_query(request: Request, fields: dict[str, Field]) -> dict:
    """Return the query string's fields, converted, checked and with defaults filled in."""
    query = _query(request)
    unknown = sorted(set(query) - set(fields))
    if unknown:
        raise RequestError(f"unknown parameter {unknown[0]!r}; the parameters are "
                           f"{', '.join(fields)}")
    values = {}
    for name, field in fields.items():
        raw = query.get(name)
        if raw is None:
            if field.required:
                raise RequestError(f"{name} is required", name)
            values[name] = field.default
            continue
        if field.kind is str:
            values[name] = field.check(name, raw)
            continue
        if not (_INTEGER if field.kind is int else _NUMBER).fullmatch(raw):
            raise RequestError(f"{name} must be {field.describe()}, not {raw!r}"[:300], name)
        values[name] = field.check(name, int(raw) if field.kind is int else float(raw))
    return values
