"""A small client for the sda-serve HTTP API, and a CLI.

    python -m service.client clip.mp4 --url http://127.0.0.1:8000 [--frames 16 --clips 2 --crops 3]
        [--model NAME --version V] [--thumbnails [DIR]] [--retries N] [--oip]

prints the top-k classes and a compact block x branch table of the SDA dependency weights.
``--retries N`` retries a 503 up to N times, waiting what its Retry-After says; ``--oip`` sends the
video to the Open Inference Protocol route (``POST /v2/models/{name}/infer``, binary tensor data)
instead of /classify; ``--thumbnails DIR`` writes the sampled frames' JPEG thumbnails to DIR.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx


class ServiceError(RuntimeError):
    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(f"HTTP {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


MAX_RETRY_WAIT_S = 60.0
OIP_HEADER = "Inference-Header-Content-Length"


class Client:
    """``retries``: how often a 503 is retried, after the wait its ``Retry-After`` asks for."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        timeout: float = 120.0,
        retries: int = 0,
        sleep: Any = time.sleep,
    ):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)
        self.retries = retries
        self.retry_waits: list[float] = []  # the waits honoured, for the caller's information
        self._sleep = sleep

    def _post(self, path: str, **kwargs: Any) -> httpx.Response:
        for attempt in range(self.retries + 1):
            response = self._http.post(path, **kwargs)
            if response.status_code != 503 or attempt == self.retries:
                return response
            retry_after = response.headers.get("retry-after", "1")
            wait = min(float(retry_after) if retry_after.isdigit() else 1.0, MAX_RETRY_WAIT_S)
            self.retry_waits.append(wait)
            self._sleep(wait)
        raise AssertionError("unreachable")

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _json(self, response: httpx.Response) -> dict[str, Any]:
        if response.status_code >= 400:
            try:
                error = response.json()  # {"detail": ...}, or {"error": ...} from the OIP routes
                detail = str(error.get("detail", error.get("error", response.text)))
            except (ValueError, AttributeError):
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
        thumbnails: bool = False,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"clips": clips, "crops": crops}
        # None: the server's choice (the model's default frame count, the newest version, ...)
        for key, value in (("frames", frames), ("top_k", top_k), ("model", model), ("version", version)):
            if value is not None:
                params[key] = value
        if thumbnails:
            params["thumbnails"] = "true"
        name, data = (
            ("video", video) if isinstance(video, bytes) else (Path(video).name, Path(video).read_bytes())
        )
        files = {"file": (name, data, "application/octet-stream")}
        return self._json(self._post("/classify", params=params, files=files))

    def infer_oip(
        self,
        video: str | os.PathLike[str] | bytes,
        model: str,
        *,
        version: str | None = None,
        top_k: int = 5,
        parameters: dict[str, int] | None = None,
    ) -> dict[str, Any]:
        """The video through ``POST /v2/models/{model}[/versions/{version}]/infer`` (binary tensor data):
        {"model_name", "model_version", "predictions": [{index, label, score}], "dependency_weights"}."""
        data = video if isinstance(video, bytes) else Path(video).read_bytes()
        outputs: list[dict[str, Any]] = [
            {"name": "probs", "parameters": {"classification": top_k}},
            {"name": "dependency_weights", "parameters": {"binary_data": False}},
        ]
        meta = self._json(self._http.get(f"/v2/models/{model}" + (f"/versions/{version}" if version else "")))
        if "dependency_weights" not in {o["name"] for o in meta["outputs"]}:  # e.g. TSN models
            outputs = outputs[:1]
        header = {
            "inputs": [
                {
                    "name": "video",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": len(data) + 4},
                }
            ],
            "outputs": outputs,
            "parameters": dict(parameters or {}),
        }
        head = json.dumps(header).encode()
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
        response = self._post(
            path,
            content=head + struct.pack("<I", len(data)) + data,
            headers={OIP_HEADER: str(len(head)), "content-type": "application/octet-stream"},
        )
        body = self._json(response)
        returned = {o["name"]: o for o in body["outputs"]}
        predictions = []
        for entry in returned["probs"]["data"]:
            score, index, label = entry.split(":", 2)
            predictions.append({"index": int(index), "label": label, "score": float(score)})
        weights = returned.get("dependency_weights")
        return {
            "model_name": body["model_name"],
            "model_version": body["model_version"],
            "predictions": predictions,
            "dependency_weights": None
            if weights is None
            else {"shape": weights["shape"], "data": weights["data"]},
        }

    def timeline(
        self, video: str | os.PathLike[str] | bytes, **options: float | int | str | None
    ) -> Iterator[dict[str, Any]]:
        """POST /timeline streamed (NDJSON): one event per window as it is inferred, the summary
        (segments, video, timings) last. ``options``: the route's query parameters (None: default)."""
        params = {key: value for key, value in options.items() if value is not None}
        name, data = (
            ("video", video) if isinstance(video, bytes) else (Path(video).name, Path(video).read_bytes())
        )
        files = {"file": (name, data, "application/octet-stream")}
        headers = {"Accept": "application/x-ndjson"}
        with self._http.stream("POST", "/timeline", params=params, files=files, headers=headers) as response:
            if response.status_code >= 400:
                response.read()
                self._json(response)
            for line in response.iter_lines():
                if not line.strip():
                    continue
                event: dict[str, Any] = json.loads(line)
                if "error" in event:
                    raise ServiceError(int(event["error"]["status"]), str(event["error"]["detail"]))
                yield event

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
    lines += ["", "ms: " + ", ".join(f"{k} {v:.1f}" for k, v in t.items())]
    if "thumbnails" in result:
        thumbs = result["thumbnails"]
        count = sum(len(c) for c in thumbs["clips"])
        lines.append(f"thumbnails: {count} {thumbs['format']} {thumbs['width']}x{thumbs['height']}")
    return "\n".join(lines)


def format_oip(result: dict[str, Any]) -> str:
    lines = [f"model {result['model_name']} v{result['model_version']} (OIP)", ""]
    width = max(len(p["label"]) for p in result["predictions"])
    for rank, p in enumerate(result["predictions"], 1):
        lines.append(f"{rank}. {p['label']:<{width}}  {p['score']:.4f}")
    weights = result["dependency_weights"]
    if weights is not None:
        _, blocks, branches = weights["shape"]
        lines += ["", "SDA dependency weights (block x branch)"]
        for b in range(blocks):
            row = weights["data"][b * branches : (b + 1) * branches]
            lines.append(f"block {b:<4}" + "".join(f"{w:8.3f}" for w in row))
    return "\n".join(lines)


def format_timeline(summary: dict[str, Any]) -> str:
    """The summary line of a timeline as a table of segments."""
    model = summary.get("model", {})
    lines = [
        f"model {model.get('name')} v{model.get('version')} ({model.get('frames')} frames), "
        f"{summary.get('num_windows')} windows of {summary.get('window_s'):g} s every "
        f"{summary.get('stride_s'):g} s, {summary.get('timings_ms', {}).get('total', 0.0):.0f} ms",
        f"{'start_s':>8} {'end_s':>8} {'conf':>6}  label",
    ]
    for seg in summary.get("segments", []):
        lines.append(f"{seg['start_s']:8.2f} {seg['end_s']:8.2f} {seg['confidence']:6.3f}  {seg['label']}")
    return "\n".join(lines)


def _timeline_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m service.client timeline", description="Actions over time in an untrimmed video."
    )
    parser.add_argument("video", type=Path)
    parser.add_argument("--url", default=os.environ.get("SDA_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--api-key", default=os.environ.get("SDA_API_KEY"))
    for name, kind in (
        ("--window-s", float), ("--stride-s", float), ("--frames", int), ("--top-k", int),
        ("--smooth", int), ("--min-score", float),
    ):  # fmt: skip
        parser.add_argument(name, type=kind, default=None, help="default: the server's")
    parser.add_argument("--model", help="default: the server's default model")
    parser.add_argument("--version", help="model version (default: the newest)")
    parser.add_argument("--json", action="store_true", help="print the NDJSON stream as it comes")
    return parser


def timeline_main(argv: list[str]) -> int:
    args = _timeline_parser().parse_args(argv)
    options = {
        key: getattr(args, key)
        for key in ("window_s", "stride_s", "frames", "top_k", "smooth", "min_score", "model", "version")
    }
    summary: dict[str, Any] = {}
    try:
        with Client(args.url, args.api_key) as client:
            for event in client.timeline(args.video, **options):
                if args.json:
                    print(json.dumps(event), flush=True)
                elif "window" not in event:
                    summary = event
    except ServiceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (httpx.HTTPError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not args.json:
        print(format_timeline(summary))
    return 0


def write_thumbnails(result: dict[str, Any], out_dir: Path) -> list[Path]:
    """The response's thumbnails as ``clip<c>-frame<f>.jpg`` files in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for c, clip in enumerate(result.get("thumbnails", {}).get("clips", [])):
        for f, jpeg in enumerate(clip):
            path = out_dir / f"clip{c}-frame{f}.jpg"
            path.write_bytes(base64.b64decode(jpeg))
            written.append(path)
    return written


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m service.client",
        description="Classify a video clip.",
        epilog="python -m service.client timeline VIDEO [--window-s S ...]: "
        "actions over time (POST /timeline)",
    )
    parser.add_argument("video", type=Path)
    parser.add_argument("--url", default=os.environ.get("SDA_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--api-key", default=os.environ.get("SDA_API_KEY"))
    parser.add_argument("--frames", type=int, default=None, help="default: the model's own (GET /models)")
    parser.add_argument("--clips", type=int, default=1)
    parser.add_argument("--crops", type=int, default=1, choices=(1, 3))
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--model", help="default: the server's default model")
    parser.add_argument("--version", help="model version (default: the newest)")
    parser.add_argument(
        "--thumbnails",
        nargs="?",
        const="",
        metavar="DIR",
        help="ask for the sampled frames' JPEG thumbnails; with DIR, write them there",
    )
    parser.add_argument(
        "--retries", type=int, default=0, help="retry a 503 this many times, after its Retry-After"
    )
    parser.add_argument("--oip", action="store_true", help="use POST /v2/models/{model}/infer (OIP)")
    parser.add_argument("--json", action="store_true", help="print the raw JSON response")
    return parser


def _run(client: Client, args: argparse.Namespace) -> str:
    if args.oip:
        model = args.model or str(client.health()["default_model"])
        params = {
            k: v for k, v in (("frames", args.frames), ("clips", args.clips), ("crops", args.crops)) if v
        }
        oip = client.infer_oip(
            args.video, model, version=args.version, top_k=args.top_k or 5, parameters=params
        )
        return json.dumps(oip, indent=2) if args.json else format_oip(oip)
    result = client.classify(
        args.video,
        frames=args.frames,
        clips=args.clips,
        crops=args.crops,
        top_k=args.top_k,
        model=args.model,
        version=args.version,
        thumbnails=args.thumbnails is not None,
    )
    text = json.dumps(result, indent=2) if args.json else format_result(result)
    if args.thumbnails:
        written = write_thumbnails(result, Path(args.thumbnails))
        text += f"\nwrote {len(written)} thumbnails to {args.thumbnails}"
    return text


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # `timeline VIDEO`: the subcommand, unless a file named "timeline" is the clip to classify
    if len(argv) >= 2 and argv[0] == "timeline" and not Path("timeline").exists():
        return timeline_main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        with Client(args.url, args.api_key, retries=args.retries) as client:
            text = _run(client, args)
    except ServiceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (httpx.HTTPError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
