"""The HTML report: self-contained, every chart rendered in a real headless Chromium."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import make_labels, make_pairs

from shadowlab.report import HIST_BINS, build_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def week() -> pl.DataFrame:
    rng = np.random.default_rng(7)
    n = 30_000
    primary = rng.beta(1, 20, n)
    candidate = np.clip(primary * 1.6 + rng.normal(0, 0.01, n), 0, 1)
    return make_pairs(
        primary,
        candidate,
        seconds=np.sort(rng.uniform(0, 7 * 86400, n)),
        audit=rng.random(n) < 0.05,
        audit_rate=0.05,
        country=rng.choice(["DE", "FR", "GB"], n).tolist(),
    )


@pytest.fixture(scope="module")
def labels(week: pl.DataFrame) -> pl.LazyFrame:
    # Reviews for v1's flags and the audit slice; the outcome follows v1's score.
    rng = np.random.default_rng(8)
    picked = week.filter((pl.col("primary_score") >= 0.1) | pl.col("audit"))
    outcome = (rng.random(picked.height) < picked["primary_score"].to_numpy() * 3).astype(int)
    return make_labels(picked["request_id"].to_list(), outcome.tolist()).lazy()


@pytest.fixture(scope="module")
def report_path(
    week: pl.DataFrame, labels: pl.LazyFrame, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    verdict = {
        "verdict": "FAIL",
        "checks": [
            {
                "name": "trigger parity",
                "status": "FAIL",
                "value": 1.9,
                "limit": [0.8, 1.25],
                "sentence": "v2 flags 1.9x as often as v1.",
            },
            {
                "name": "enough data",
                "status": "PASS",
                "value": 30000,
                "limit": 20000,
                "sentence": "30000 rows.",
            },
        ],
    }
    report = build_report(
        week, primary_threshold=0.1, candidate_threshold=0.16, labels=labels, verdict=verdict
    )
    assert list(report.charts) == [
        "score_distributions", "qq", "trigger_rate_hourly", "segment_ratios", "review_queue",
        "decision_crosstab", "reliability", "precision_recall",
    ]  # fmt: skip
    return report.save(tmp_path_factory.mktemp("report") / "report.html")


def test_charts_carry_only_aggregates(week: pl.DataFrame, labels: pl.LazyFrame) -> None:
    report = build_report(week, primary_threshold=0.1, candidate_threshold=0.16, labels=labels)
    assert len(report.charts) == 8
    # 30 000 rows in, but no chart holds more than a few thousand points.
    for name, chart in report.charts.items():
        spec = chart.to_dict()
        rows = sum(len(v) for v in spec.get("datasets", {}).values())  # every layer's data
        assert 0 < rows <= 5_000, (name, rows)
    hist = report.charts["score_distributions"].to_dict()["datasets"]
    assert sum(len(v) for v in hist.values()) <= 2 * HIST_BINS


def test_html_is_self_contained(report_path: Path) -> None:
    text = report_path.read_text()
    assert not re.search(r"<script[^>]+src=[\"']?https?://", text)
    assert not re.search(r"<link[^>]+href=[\"']?https?://", text)
    assert "vegaEmbed" in text
    assert text.index("id='verdict'") < text.index("id='charts'")  # verdict first


def test_save_chart_png_and_svg(week: pl.DataFrame, tmp_path: Path) -> None:
    report = build_report(week, primary_threshold=0.1, candidate_threshold=0.16)
    png = report.save_chart("qq", tmp_path / "qq.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = report.save_chart("trigger_rate_hourly", tmp_path / "t.svg")
    assert svg.read_text().lstrip().startswith("<svg")
    with pytest.raises(ValueError, match=r"\.png or \.svg"):
        report.save_chart("qq", tmp_path / "qq.jpg")


@pytest.mark.browser
@pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="Debian's chromium and chromium-driver are not installed (make test installs them)",
)
def test_report_renders_in_headless_chromium(report_path: Path, tmp_path: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
        # No network: every request that is not a local file goes to a closed port.
        "--proxy-server=127.0.0.1:9",
        "--proxy-bypass-list=<-loopback>",
        "--window-size=1200,2600",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        driver.get(report_path.as_uri())
        charts = driver.find_elements(By.CSS_SELECTOR, "div.chart")
        assert len(charts) == 8
        WebDriverWait(driver, 30).until(
            lambda d: all(
                el.find_elements(By.CSS_SELECTOR, "svg g")
                for el in d.find_elements(By.CSS_SELECTOR, "div.chart")
            )
        )
        for el in charts:
            svg = el.find_element(By.CSS_SELECTOR, "svg")
            assert svg.size["width"] > 100 and svg.size["height"] > 100, el.get_attribute(
                "data-chart"
            )
            assert len(svg.find_elements(By.CSS_SELECTOR, "path")) > 3
        statuses = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".status")]
        assert statuses[:3] == ["FAIL", "FAIL", "PASS"]
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        shot = tmp_path / "report.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        driver.quit()


def test_reference_overlay_and_notes(week: pl.DataFrame) -> None:
    rng = np.random.default_rng(9)
    ref = pl.DataFrame({"model": ["candidate"] * 5000, "score": rng.beta(1, 12, 5000)})
    report = build_report(week, primary_threshold=0.1, candidate_threshold=0.16, reference=ref)
    models = {
        row["model"]
        for data in report.charts["score_distributions"].to_dict()["datasets"].values()
        for row in data
    }
    assert models == {"v1 (primary)", "v2 (candidate)", "v2 reference"}
    assert any("no labels" in n for n in report.notes)  # said, not silently left out


SAMPLE = Path(__file__).resolve().parents[1] / "data" / "samples" / "trigger-shift"


@pytest.mark.skipif(not (SAMPLE / "manifest.json").exists(), reason="bundled sample week missing")
def test_report_cli_on_the_sample_week(tmp_path: Path) -> None:
    import json

    from shadowlab.cli import main

    t1 = json.loads((SAMPLE / "manifest.json").read_text())["primary_threshold"]
    out = tmp_path / "report.html"
    code = main(
        ["report", str(SAMPLE / "pairs"), "--labels", str(SAMPLE / "labels"),
         "--reference", str(SAMPLE / "reference.parquet"), "--primary-threshold", str(t1),
         "--out", str(out), "--quiet"]
    )  # fmt: skip
    assert code == 0
    text = out.read_text()
    assert text.count("class='chart'") == 8
    assert "t2 = " in text  # the calibrated threshold was computed
