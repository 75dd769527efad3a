"""Why a clip cannot be used, with no opinion on how a caller reports it.

The trainer raises these as well as the service, so they carry no HTTP status: the service maps each
class to a status in one place. ``message`` is written for the person who sent the clip.
"""

from __future__ import annotations

__all__ = [
    "DecodeTimeoutError",
    "InputTooLargeError",
    "NotAVideoError",
    "UndecodableVideoError",
    "VideoError",
    "VideoLimitError",
]


class VideoError(Exception):
    """A clip that cannot be decoded into frames; ``message`` says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotAVideoError(VideoError):
    """Not a media container, a still image, or a file with no video stream."""


class UndecodableVideoError(VideoError):
    """A video container whose video cannot be decoded: truncated, corrupt, zero frames."""


class DecodeTimeoutError(VideoError):
    """Probing and decoding took longer than the configured time limit."""


class VideoLimitError(VideoError):
    """A configured limit was exceeded.

    ``limit`` is the :class:`~videocore.decode.VideoLimits` field name, ``value`` the measured value
    and ``maximum`` the configured limit, so a caller can name its own setting.
    """

    def __init__(self, what: str, limit: str, value: float, maximum: float) -> None:
        super().__init__(f"{what}: {_fmt(value)} exceeds the limit of {_fmt(maximum)} (setting {limit})")
        self.limit = limit
        self.value = value
        self.maximum = maximum


class InputTooLargeError(VideoLimitError):
    """The input file itself is larger than ``max_bytes`` (before anything is decoded)."""

    def __init__(self, size: int, maximum: int) -> None:
        super().__init__("input size in bytes", "max_bytes", size, maximum)


def _fmt(x: float) -> str:
    return f"{x:,}" if isinstance(x, int) else f"{x:,.2f}"
