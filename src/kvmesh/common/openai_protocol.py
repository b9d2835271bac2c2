"""OpenAI-style error bodies shared by every kvmesh HTTP server.

Shape (what the official SDKs parse)::

    {"error": {"message": "...", "type": "invalid_request_error", "param": null, "code": "model_not_found"}}
"""

from __future__ import annotations

import json

INVALID_REQUEST = "invalid_request_error"
NOT_FOUND = "not_found_error"
SERVER_ERROR = "server_error"
UNAVAILABLE = "service_unavailable"


def error_payload(message: str, *, type_: str = INVALID_REQUEST, code: str | None = None,
                  param: str | None = None) -> dict[str, object]:
    """The error object as a dict."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_body(message: str, *, type_: str = INVALID_REQUEST, code: str | None = None,
               param: str | None = None) -> bytes:
    """The error object as UTF-8 JSON bytes."""
    return json.dumps(error_payload(message, type_=type_, code=code, param=param)).encode()


def sse_error_event(message: str, *, code: str = "upstream_error") -> bytes:
    """A final SSE event telling a streaming client the stream broke, then ``[DONE]``."""
    payload = json.dumps(error_payload(message, type_=SERVER_ERROR, code=code))
    return f"data: {payload}\n\ndata: [DONE]\n\n".encode()
