"""One refusal type for every service: a request or command that cannot be done, with the HTTP status that
says why and a message that says what to do next. shared.http maps it to a JSON answer in one place."""

from __future__ import annotations


class Refused(Exception):
    """Raised by domain code for a request it will not do; `status` is the HTTP status (400, 401, 403, 404, 409)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message
