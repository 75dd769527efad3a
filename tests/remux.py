"""Remux test clips with PyAV the way real tools rewrite files, without re-encoding.

:func:`trim_mp4` does what ``ffmpeg -ss T -i in.mp4 -c copy out.mp4`` and phone "trim" features do: it
keeps the packets from the keyframe before the cut, shifts timestamps so the cut is time 0, and lets
the ``mp4`` muxer write an edit list that hides the frames before the cut. FFmpeg's demuxer then flags
those leading packets ``is_discard``: the decoder still needs them (they are the references of the
first shown frames), but a player must not show them.

:func:`damage_packet` zeroes one packet's payload, so that frame fails to decode (a corrupt upload).
"""

from __future__ import annotations

import os
from pathlib import Path

import av


def _video_packets(container: av.container.InputContainer) -> list[av.Packet]:
    return [p for p in container.demux(video=0) if p.size]


def trim_mp4(src: str | os.PathLike, dst: str | os.PathLike, cut: int) -> Path:
    """Copy ``src`` to ``dst`` (MP4) starting at presentation frame ``cut``, mid-GOP, with an edit list."""
    dst = Path(dst)
    with av.open(str(src)) as inp, av.open(str(dst), "w", format="mp4") as out:
        ist = inp.streams.video[0]
        ost = out.add_stream_from_template(ist)
        packets = _video_packets(inp)
        cut_pts = sorted(p.pts for p in packets)[cut]
        key_pts = max(p.pts for p in packets if p.is_keyframe and p.pts <= cut_pts)
        start = next(i for i, p in enumerate(packets) if p.pts == key_pts)
        for packet in packets[start:]:
            packet.pts -= cut_pts
            packet.dts -= cut_pts
            packet.stream = ost
            out.mux(packet)
    return dst


def damage_packet(src: str | os.PathLike, dst: str | os.PathLike, position: int) -> Path:
    """Copy ``src`` to ``dst`` (same container) with the payload of the ``position``-th video packet
    (decode order) replaced by zero bytes of the same length."""
    dst = Path(dst)
    with av.open(str(src)) as inp, av.open(str(dst), "w", format=inp.format.name.split(",")[0]) as out:
        ist = inp.streams.video[0]
        ost = out.add_stream_from_template(ist)
        for i, packet in enumerate(_video_packets(inp)):
            if i == position:
                damaged = av.Packet(bytes(packet.size))
                damaged.pts, damaged.dts, damaged.time_base = packet.pts, packet.dts, packet.time_base
                damaged.is_keyframe = packet.is_keyframe
                packet = damaged
            packet.stream = ost
            out.mux(packet)
    return dst
