"""index.html opens in headless Chromium (Debian's package; CI installs it): the screenshot is not blank and
shows the plots, and the page's images are the report's plot files."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from report_support import require_chromium, require_module, run_priced_suite

from pytest_gpubench.report.plots import COLOURS


def chromium(binary: str, page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start
    return subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--hide-scrollbars", f"--user-data-dir={profile}", *args, page.as_uri()],
                          capture_output=True, text=True, timeout=180, check=True)


def pixels_near(image: np.ndarray, colour: str, tolerance: float = 0.08) -> int:
    rgb = np.array([int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    return int((np.abs(image[:, :, :3] - rgb).max(axis=2) < tolerance).sum())


def test_index_html_in_headless_chromium(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                         host_with_two_h200: None) -> None:
    binary = require_chromium()
    require_module("matplotlib", "report")
    run_priced_suite(pytester, monkeypatch)
    folder = pytester.path / "gpubench-report"
    page = folder / "index.html"

    dom = chromium(binary, page, pytester.path / "profile", "--dump-dom").stdout
    sources = re.findall(r'<img src="([^"]+)"', dom)
    assert sources == ["plots/latency_cdf.png", "plots/serving_vs_concurrency.png", "plots/speedups.png",
                       "plots/peak_share.png", "plots/cost.png"]
    assert all((folder / source).is_file() for source in sources)
    assert "<h2>Results</h2>" in dom and "serving: latencies in ms" in dom

    shot = pytester.path / "shot.png"
    chromium(binary, page, pytester.path / "profile", "--window-size=1280,2000", f"--screenshot={shot}")
    from matplotlib.image import imread

    image = imread(shot)
    assert image.shape[:2] == (2000, 1280)
    not_white = (image[:, :, :3] < 0.95).any(axis=2).mean()
    assert not_white > 0.05, f"{not_white:.1%} of the screenshot is not white"
    # the plots' own colours on the page: their images loaded and were drawn, not left as broken icons
    assert pixels_near(image, COLOURS[0]) > 5000
    assert pixels_near(image, COLOURS[1]) > 500
