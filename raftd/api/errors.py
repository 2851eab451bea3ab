"""Typed API errors and their wire form (``raftd.v1.Error``)."""

from __future__ import annotations

from raftd.wire.pb import api_pb2 as apb

__all__ = ["ApiError", "Code", "error_response"]

Code = apb.Error.Code
_E = apb.Error


class ApiError(Exception):
    """An error answered to the client: ``code`` (``raftd.v1.Error.Code``), a human
    message, and for writes whether the write may have been applied."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        indeterminate: bool = False,
        leader: str = "",
        compact_revision: int = 0,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.indeterminate = indeterminate
        self.leader = leader
        self.compact_revision = compact_revision

    def to_pb(self) -> apb.Error:
        return _E(
            code=self.code,  # type: ignore[arg-type]
            message=self.message,
            indeterminate=self.indeterminate,
            leader=self.leader,
            compact_revision=self.compact_revision,
        )

    def response(self, request_id: int = 0) -> apb.Response:
        return apb.Response(id=request_id, error=self.to_pb())

    def __repr__(self) -> str:
        return f"ApiError({_E.Code.Name(self.code)}, {self.message!r})"


def error_response(request_id: int, code: int, message: str, **kw: object) -> apb.Response:
    """A Response carrying only an error."""
    return ApiError(code, message, **kw).response(request_id)  # type: ignore[arg-type]
