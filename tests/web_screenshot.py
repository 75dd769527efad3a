"""Take the README's screenshot of the web page with a real result.

``.venv/bin/python tests/web_screenshot.py [--out docs/web-page.png]``: serves the embedded default
model with ``python -m service`` on a free port, classifies a synthetic clip (``model.data.synthetic``,
class 0, encoded with PyAV) in headless Chromium (Debian's ``chromium``), and saves a full-page PNG.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from conftest import DEFAULT_MODEL_DIR, ROOT
from test_web import CHROMIUM, CHROMIUM_FLAGS, classify_in_page, open_page

from model.data.synthetic import SYNTHETIC_LABELS, render_clip
from model.evaluate import encode_mp4
from service.testing import start_server

LABEL = 0  # "Pushing something from left to right": the default model recognises it
SEED = 4  # a clip where the moving object is easy to see


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "web-page.png")
    parser.add_argument("--frames", type=int, default=16, help="16: the default model's default_frames")
    parser.add_argument("--clips", type=int, default=1)
    parser.add_argument("--crops", type=int, default=1)
    args = parser.parse_args(argv)

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shutil.copytree(DEFAULT_MODEL_DIR.parent, work / "models" / DEFAULT_MODEL_DIR.parent.name)
        clip = render_clip(LABEL, np.random.default_rng(SEED), short_side=160)
        video = work / "pushing-left-to-right.mp4"
        video.write_bytes(encode_mp4(clip.frames, clip.fps))
        server = start_server(work / "models", work / "server.log")
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
                )
                page = browser.new_page(viewport={"width": 1120, "height": 900}, device_scale_factor=1)
                open_page(page, server, DEFAULT_MODEL_DIR.parent.name)
                classify_in_page(page, video, frames=args.frames, clips=args.clips, crops=args.crops)
                page.locator("#heatmap td.cell").nth(5).hover()  # show a value read-out as on hover
                args.out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.out), full_page=True)
                top = page.locator("#top5 .bar-label").first.text_content()
                browser.close()
        finally:
            server.stop()
    size = args.out.stat().st_size
    print(f"{args.out}: {size:,} bytes; true class {SYNTHETIC_LABELS[LABEL]!r}, top-1 {top!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
