"""The web page at GET / in a real headless Chromium (Debian's ``chromium`` package, driven by
Playwright; ``make test`` installs both), against real uvicorn servers; and, in-process (``app``), the
page's files and the ``thumbnails`` option of POST /classify that the page shows.

The browser cannot be downloaded here, so Playwright is pointed at the system browser and
``playwright install`` is never needed.
"""

from __future__ import annotations

import base64
import re
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import numpy as np
import onnx
import pytest
from attack import black_h264
from clips import encode_clip, read_index, write_png
from conftest import DEFAULT_MODEL_DIR, DEFAULT_MODEL_NAME

from model.data.synthetic import render_clip
from model.evaluate import encode_mp4
from service.testing import InProcessServer, ServerProcess, start_server
from videocore.contract import GraphMetadata

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 60_000
# The default of SDA_THUMBNAIL_HEIGHT, as the README documents it.
THUMBNAIL_HEIGHT = 72


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)
    # Anything the Content-Security-Policy blocks (a style, a script, an image) would break the page.
    context.add_init_script(
        "window.cspViolations = [];"
        "document.addEventListener('securitypolicyviolation',"
        " e => window.cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));"
    )
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    if opened.url.startswith("http"):
        errors += opened.evaluate("window.cspViolations")
    context.close()
    assert not errors, f"JavaScript errors or content blocked by the CSP on the page: {errors}"


@pytest.fixture(scope="module")
def default_model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The embedded default model (12 classes, 16 SDA blocks x 4 branches), as `make run` serves it."""
    repo = tmp_path_factory.mktemp("web-models")
    shutil.copytree(DEFAULT_MODEL_DIR.parent, repo / DEFAULT_MODEL_DIR.parent.name)
    server = start_server(repo, tmp_path_factory.mktemp("web-server") / "server.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def synthetic_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic "Pushing something from left to right" clip, H.264 in MP4, encoded with PyAV."""
    clip = render_clip(0, np.random.default_rng(20261125), short_side=160)
    path = tmp_path_factory.mktemp("web-clips") / "pushing-left-to-right.mp4"
    path.write_bytes(encode_mp4(clip.frames, clip.fps))
    return path


def default_model_layout() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(blocks, branches) as the 8-frame graph's own metadata says, independent of the service."""
    proto = onnx.load(str(DEFAULT_MODEL_DIR / "model-8f.onnx"), load_external_data=False)
    meta = GraphMetadata.from_props({p.key: p.value for p in proto.metadata_props})
    return tuple(meta.blocks), tuple(meta.branches)


def api_answer(server: ServerProcess | InProcessServer, path: Path, **params: object) -> dict:
    with server.client() as client, path.open("rb") as f:
        response = client.post("/classify", params=params, files={"file": (path.name, f, "video/mp4")})
    assert response.status_code == 200, response.text
    return response.json()


def open_page(page, server: ServerProcess, model_name: str) -> None:
    page.goto(server.url + "/")
    page.wait_for_function(
        "name => document.getElementById('model-info').textContent.includes(name)", arg=model_name
    )


def classify_in_page(page, path: Path, *, frames: int, clips: int = 1, crops: int = 1) -> None:
    page.get_by_label("Video file").set_input_files(str(path))
    page.get_by_role("radio", name=str(frames)).check()
    page.get_by_label("Clips").select_option(str(clips))
    page.get_by_label("Crops").select_option(str(crops))
    # Submit with the keyboard, as a keyboard-only user would.
    page.get_by_role("button", name="Classify").focus()
    with page.expect_response(lambda response: "/classify?" in response.url):
        page.keyboard.press("Enter")
    page.wait_for_function("() => !document.getElementById('classify-button').disabled")


@pytest.mark.parametrize(("frames", "clips", "crops"), [(8, 1, 1), (16, 2, 3)])
def test_page_renders_the_answer_of_the_api_for_a_real_clip(
    page, default_model_server: ServerProcess, synthetic_clip: Path, frames: int, clips: int, crops: int
) -> None:
    expected = api_answer(default_model_server, synthetic_clip, frames=frames, clips=clips, crops=crops)
    blocks, branches = default_model_layout()
    assert (len(blocks), len(branches)) == (16, 4)  # ResNet-50 depth: the paper's layout

    open_page(page, default_model_server, DEFAULT_MODEL_NAME)
    with default_model_server.client() as client:
        served = {m["name"]: m for m in client.get("/models").json()["models"]}[DEFAULT_MODEL_NAME]
    # The page opens at the model's own default frame count, the one the API uses when none is named.
    assert page.get_by_role("radio", name=str(served["default_frames"])).is_checked()
    classify_in_page(page, synthetic_clip, frames=frames, clips=clips, crops=crops)

    assert page.locator("#error").is_hidden(), page.locator("#error").text_content()
    assert page.locator("#results").is_visible()
    labels = page.locator("#top5 .bar-label").all_text_contents()
    assert labels[0] == expected["predictions"][0]["label"]
    assert labels == [p["label"] for p in expected["predictions"]]
    assert page.locator("#top5 .bar").count() == 5
    scores = page.locator("#top5 .bar-score").all_text_contents()
    assert scores == [f"{100 * p['score']:.1f} %" for p in expected["predictions"]]
    assert expected["predictions"][0]["label"] in page.locator("#summary").text_content()

    cells = page.locator("#heatmap td.cell")
    assert cells.count() == len(blocks) * len(branches)
    assert page.locator("#heatmap tbody th").all_text_contents() == list(blocks)
    assert page.locator("#heatmap thead th").all_text_contents()[1:] == list(branches)
    first = expected["dependency_weights"]["blocks"][0]
    assert f"{blocks[0]}, {branches[0]}: {first['weights'][branches[0]]:.3f}" in cells.first.get_attribute(
        "title"
    )
    assert page.locator("#stages tbody tr").count() == 4  # layer1..layer4 means

    thumbs = page.locator("#thumbnails img")
    assert thumbs.count() == frames * clips
    natural = thumbs.evaluate_all("imgs => imgs.map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
    assert all(done and w > 0 and h == THUMBNAIL_HEIGHT for done, w, h in natural), natural
    timings = page.locator("#timings dt").all_text_contents()
    assert {"decode", "inference", "total (server)"} <= set(timings)


def test_heatmap_values_are_reachable_with_the_keyboard(
    page, default_model_server: ServerProcess, synthetic_clip: Path
) -> None:
    expected = api_answer(default_model_server, synthetic_clip, frames=8)
    open_page(page, default_model_server, DEFAULT_MODEL_NAME)
    classify_in_page(page, synthetic_clip, frames=8)
    page.locator("#heatmap td.cell").first.focus()
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowRight")
    second_block = expected["dependency_weights"]["blocks"][1]
    branch = expected["dependency_weights"]["branches"][1]
    readout = page.locator("#cell-readout").text_content()
    assert readout.startswith(f"{second_block['block']}, {branch}: {second_block['weights'][branch]:.3f}")
    focused = page.evaluate("document.activeElement.dataset.row + ',' + document.activeElement.dataset.col")
    assert focused == "1,1"


def test_a_dropped_file_is_classified(
    page, default_model_server: ServerProcess, synthetic_clip: Path
) -> None:
    expected = api_answer(default_model_server, synthetic_clip, frames=8)
    open_page(page, default_model_server, DEFAULT_MODEL_NAME)
    dropped = page.evaluate_handle(
        """([b64, name]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: "video/mp4" }));
            return transfer;
        }""",
        [base64.b64encode(synthetic_clip.read_bytes()).decode(), synthetic_clip.name],
    )
    page.dispatch_event("#drop-zone", "drop", {"dataTransfer": dropped})
    assert page.evaluate("document.getElementById('file').files[0].name") == synthetic_clip.name
    with page.expect_response(lambda response: "/classify?" in response.url):
        page.get_by_role("button", name="Classify").click()
    page.wait_for_function("() => !document.getElementById('classify-button').disabled")
    assert page.locator("#top5 .bar-label").first.text_content() == expected["predictions"][0]["label"]


def test_page_says_a_png_is_not_a_video(page, default_model_server: ServerProcess, tmp_path: Path) -> None:
    png = write_png(tmp_path / "still.png")
    open_page(page, default_model_server, DEFAULT_MODEL_NAME)
    classify_in_page(page, png, frames=8)
    error = page.get_by_role("alert")
    assert error.is_visible()
    text = error.text_content()
    assert text.startswith("Error 415:") and "not a video" in text, text
    assert page.locator("#results").is_hidden()


@pytest.fixture(scope="module")
def small_limit_server(
    tsn_only_repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The TSN test graph (no SDA blocks) with a 100 kB upload limit, one request in flight at most,
    and 40-pixel thumbnails."""
    server = start_server(
        tsn_only_repo,
        tmp_path_factory.mktemp("web-small-limit") / "server.log",
        max_upload_bytes=100_000,
        max_queue=1,
        thumbnail_height=40,
    )
    yield server
    server.stop()


def test_page_says_a_file_is_too_large(page, small_limit_server: ServerProcess, tmp_path: Path) -> None:
    big = encode_clip(tmp_path / "noise.mp4", width=320, height=240, frames=24, pattern="noise")
    assert big.stat().st_size > 100_000
    open_page(page, small_limit_server, "tiny-tsn")
    classify_in_page(page, big, frames=8)
    text = page.get_by_role("alert").text_content()
    assert text.startswith("Error 413:") and "too large" in text, text


def test_page_says_the_service_is_overloaded(page, small_limit_server: ServerProcess, tmp_path: Path) -> None:
    clip = encode_clip(tmp_path / "small.mp4", width=96, height=64, frames=24)
    open_page(page, small_limit_server, "tiny-tsn")
    # Hold the only slot with a long decode (a one-keyframe 1080p clip: seconds to decode, a few kB).
    long_decode = black_h264(tmp_path / "long.mp4", 1920, 1080, 1800)
    assert len(long_decode) < 100_000
    with ThreadPoolExecutor(1) as pool, small_limit_server.client() as client:
        held = pool.submit(
            client.post, "/classify", content=long_decode, headers={"content-type": "video/mp4"}
        )
        deadline = time.monotonic() + 30
        while client.get("/health").json()["in_flight"] < 1:
            assert time.monotonic() < deadline, "the held request was never admitted"
            time.sleep(0.05)
        classify_in_page(page, clip, frames=8)
        held.result(120)
    text = page.get_by_role("alert").text_content()
    # Retry-After comes from the measured drain rate: 1..30 s
    wait = re.search(r"Try again in (\d+) s", text)
    assert text.startswith("Error 503:") and "busy" in text and wait and 1 <= int(wait[1]) <= 30, text
    assert page.locator("#results").is_hidden()


def test_page_handles_a_model_without_dependency_weights(
    page, small_limit_server: ServerProcess, tmp_path: Path
) -> None:
    clip = encode_clip(tmp_path / "small.mp4", width=96, height=64, frames=24)
    open_page(page, small_limit_server, "tiny-tsn")
    assert page.get_by_role("radio", name="16").is_disabled()  # the TSN graph exists for 8 frames only
    classify_in_page(page, clip, frames=8)
    assert page.locator("#results").is_visible()
    assert page.locator("#top5 .bar").count() == 3  # the test graph has three classes
    assert page.locator("#no-weights").is_visible()
    assert page.locator("#heatmap td").count() == 0
    heights = page.locator("#thumbnails img").evaluate_all("imgs => imgs.map(i => i.naturalHeight)")
    assert heights == [40] * 8  # SDA_THUMBNAIL_HEIGHT=40


def test_index_serves_the_page_and_its_files_with_a_strict_csp(app: InProcessServer) -> None:
    with app.client() as client:
        index = client.get("/")
        assert index.status_code == 200
        assert index.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in index.headers["content-security-policy"]
        for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', index.text):
            assert client.get(asset).status_code == 200, asset
        assert "http://" not in index.text and "https://" not in index.text  # no CDN: works offline


# ------------------------------------------------------------------------ the JSON thumbnails option
def decode_jpeg(data: str) -> np.ndarray:
    """Decode one base64 JPEG file with FFmpeg's MJPEG decoder -> (H, W, 3) RGB."""
    raw = base64.b64decode(data, validate=True)
    assert raw[:2] == b"\xff\xd8" and raw[-2:] == b"\xff\xd9"  # JPEG SOI ... EOI
    decoder = av.CodecContext.create("mjpeg", "r")
    frames = decoder.decode(av.Packet(raw))
    assert len(frames) == 1
    return frames[0].to_ndarray(format="rgb24")


@pytest.mark.parametrize(
    ("clip_kwargs", "frames", "clips", "size"),
    [
        ({"width": 96, "height": 64, "frames": 30}, 8, 2, (108, 72)),  # 72 rows, 3:2 kept
        ({"width": 48, "height": 64, "rotation": 90}, 16, 1, (54, 72)),  # upright, portrait
    ],
)
def test_thumbnails_are_jpegs_of_the_sampled_frames(
    app: InProcessServer, clip_dir: Path, clip_kwargs: dict, frames: int, clips: int, size: tuple[int, int]
) -> None:
    path = encode_clip(clip_dir / f"thumbs-{frames}-{clips}.mp4", **clip_kwargs)
    body = api_answer(app, path, frames=frames, clips=clips, thumbnails="true")
    thumbs = body["thumbnails"]
    assert thumbs["format"] == "jpeg"
    assert (thumbs["width"], thumbs["height"]) == size
    assert len(thumbs["clips"]) == clips
    assert [len(c) for c in thumbs["clips"]] == [frames] * clips
    for clip_thumbs, indices in zip(thumbs["clips"], body["sampled"]["indices"], strict=True):
        for data, index in zip(clip_thumbs, indices, strict=True):
            rgb = decode_jpeg(data)
            assert rgb.shape == (size[1], size[0], 3)
            assert read_index(rgb) == index  # the very frame that was sampled, upright


def test_thumbnails_are_absent_unless_asked_for(app: InProcessServer, clip_dir: Path) -> None:
    path = encode_clip(clip_dir / "no-thumbs.mp4")
    assert "thumbnails" not in api_answer(app, path)
    assert "thumbnails" not in api_answer(app, path, thumbnails="false")
