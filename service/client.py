"""A small client for the sda-serve HTTP API, and a CLI.

    python -m service.client clip.mp4 --url http://127.0.0.1:8000 [--frames 16 --clips 2 --crops 3]

prints the top-k classes and a compact block x branch table of the SDA dependency weights.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx


class ServiceError(RuntimeError):
    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(f"HTTP {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


class Client:
    def __init__(
        self, url: str = "http://127.0.0.1:8000", api_key: str | None = None, timeout: float = 120.0
    ):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _json(self, response: httpx.Response) -> dict[str, Any]:
        if response.status_code >= 400:
            try:
                detail = str(response.json().get("detail", response.text))
            except ValueError:
                detail = response.text
            raise ServiceError(response.status_code, detail)
        body: dict[str, Any] = response.json()
        return body

    def classify(
        self,
        video: str | os.PathLike[str] | bytes,
        *,
        frames: int | None = None,
        top_k: int | None = None,
        clips: int = 1,
        crops: int = 1,
        model: str | None = None,
        version: str | None = None,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"clips": clips, "crops": crops}
        # None: the server's choice (the model's default frame count, the newest version, ...)
        for key, value in (("frames", frames), ("top_k", top_k), ("model", model), ("version", version)):
            if value is not None:
                params[key] = value
        if isinstance(video, bytes):
            files: dict[str, tuple[str, Any, str]] = {"file": ("video", video, "application/octet-stream")}
            return self._json(self._http.post("/classify", params=params, files=files))
        path = Path(video)
        with path.open("rb") as f:
            files = {"file": (path.name, f, "application/octet-stream")}
            return self._json(self._http.post("/classify", params=params, files=files))

    def health(self) -> dict[str, Any]:
        return self._json(self._http.get("/health"))

    def models(self) -> dict[str, Any]:
        return self._json(self._http.get("/models"))


def format_result(result: dict[str, Any]) -> str:
    """Top-k lines and the block x branch weight table, as plain text."""
    model = result["model"]
    video = result["video"]
    lines = [
        f"model {model['name']} v{model['version']} ({model['frames']} frames, "
        f"{model.get('precision', 'fp32')}, {model['provider']})",
        f"video {video['container']}/{video['codec']} {video['width']}x{video['height']}, "
        f"{video['frames']} frames, {video['duration_s']:.2f} s",
        *(f"warning: {w['message']}" for w in result.get("warnings", [])),
        "",
    ]
    width = max(len(p["label"]) for p in result["predictions"])
    for rank, p in enumerate(result["predictions"], 1):
        lines.append(f"{rank}. {p['label']:<{width}}  {p['score']:.4f}")
    deps = result["dependency_weights"]
    if deps["blocks"]:
        branches = deps["branches"]
        col = max(6, *(len(b) + 1 for b in branches))
        lines += [
            "",
            "SDA dependency weights (block x branch)",
            "block".ljust(10) + "".join(b.rjust(col) for b in branches),
        ]
        for row in deps["blocks"]:
            lines.append(
                row["block"].ljust(10) + "".join(f"{row['weights'][b]:.3f}".rjust(col) for b in branches)
            )
        lines.append("-" * (10 + col * len(branches)))
        for row in deps["stages"]:
            lines.append(
                row["stage"].ljust(10) + "".join(f"{row['weights'][b]:.3f}".rjust(col) for b in branches)
            )
    t = result["timings_ms"]
    lines += [
        "",
        "ms: "
        + ", ".join(f"{k} {t[k]:.1f}" for k in ("decode", "preprocess", "queue", "inference", "total")),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.client", description="Classify a video clip.")
    parser.add_argument("video", type=Path)
    parser.add_argument("--url", default=os.environ.get("SDA_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--api-key", default=os.environ.get("SDA_API_KEY"))
    parser.add_argument("--frames", type=int, default=None, help="default: the model's own (GET /models)")
    parser.add_argument("--clips", type=int, default=1)
    parser.add_argument("--crops", type=int, default=1, choices=(1, 3))
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--model")
    parser.add_argument("--json", action="store_true", help="print the raw JSON response")
    args = parser.parse_args(argv)
    try:
        with Client(args.url, args.api_key) as client:
            result = client.classify(
                args.video,
                frames=args.frames,
                clips=args.clips,
                crops=args.crops,
                top_k=args.top_k,
                model=args.model,
            )
    except ServiceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (httpx.HTTPError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else format_result(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
