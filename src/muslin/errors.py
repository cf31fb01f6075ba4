"""Errors a user sees: one line each, worded as Docker words them where users know it."""


class MuslinError(Exception):
    """Base: the message is the whole user-facing text."""

    code = "error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidParameter(MuslinError):
    """Bad input: nothing was changed."""

    code = "invalid"


class NotFound(MuslinError):
    code = "not_found"


class Conflict(MuslinError):
    """The request clashes with existing state (name taken, address in use, in use by endpoints)."""

    code = "conflict"


class Exhausted(MuslinError):
    """No address or pool left."""

    code = "exhausted"


class KernelError(MuslinError):
    """The kernel refused an operation; ``errno`` says why when the kernel gave a number (callers
    tell "already gone" or "busy" from other refusals by it, not by the text)."""

    code = "kernel"

    def __init__(self, message: str, errno: int | None = None):
        super().__init__(message)
        self.errno = errno


BY_CODE = {cls.code: cls for cls in (MuslinError, InvalidParameter, NotFound, Conflict, Exhausted, KernelError)}
