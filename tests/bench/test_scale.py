"""The scaling curve: the stage meter's CPU and process-tree memory, the fitted exponents and the HTML page."""

import json
import subprocess
import sys
import time
from html.parser import HTMLParser

import pytest

from bench import resources, scale


def test_stage_meter_counts_cpu_and_a_childs_memory():
    child = "import time; block = bytearray(300 * 2**20); block[::4096] = b'x' * len(block[::4096]); time.sleep(1.5)"
    with resources.StageMeter(every_s=0.05) as usage:
        process = subprocess.Popen([sys.executable, "-c", child])
        started = time.process_time()
        while time.process_time() - started < 0.3:  # 0.3 s of this process's CPU, however loaded the machine
            sum(range(1000))
        process.wait()
    assert usage.cpu_s >= 0.3  # the busy loop, plus the child once waited for
    assert usage.wall_s >= 1.5
    assert usage.peak_rss_mb >= 300  # the child's 300 MiB, which ru_maxrss of this process would not show


@pytest.mark.parametrize("power", [1.0, 2.0, 0.5])
def test_exponent_recovers_a_power_law(power):
    points = [(n, 3.0 * n**power) for n in (1e3, 1e4, 1e5, 1e6)]
    assert scale.exponent(points) == pytest.approx(power)


def test_exponent_needs_two_sizes_and_skips_missing_values():
    assert scale.exponent([(1e3, 1.0)]) is None
    assert scale.exponent([(1e3, 1.0), (1e4, None), (1e4, 0.0)]) is None
    assert scale.exponent([(1e3, 1.0), (1e4, None), (1e5, 100.0)]) == pytest.approx(1.0)


def bench_result(events: int, features_s: float, ranking_s: float) -> dict:
    return {
        "events": events,
        "failed": [],
        "timing": {
            "stages": {"features": features_s, "ranking": ranking_s},
            "cpu_s": {"features": features_s * 1.5, "ranking": ranking_s},
            "peak_rss_mb": {"features": 500.0, "ranking": 100.0 * (events / 1e3) ** 0.5},
        },
    }


def test_summary_flags_the_stage_that_grows_faster_than_linearly(tmp_path):
    results = {
        name: bench_result(n, features_s=0.01 * n, ranking_s=1e-6 * n**1.5)
        for name, n in (("tiny", 1_000), ("default", 100_000), ("medium", 1_000_000))
    }
    results["medium"]["settings"] = {"parameters": {"ranking_epochs": 1}}
    summary = scale.summarize(results, tmp_path)
    assert summary["parameters"] == {"tiny": {}, "default": {}, "medium": {"ranking_epochs": 1}}
    assert summary["exponents"]["features"]["wall_s"] == pytest.approx(1.0)
    assert summary["exponents"]["features"]["peak_rss_mb"] == pytest.approx(0.0)
    assert summary["exponents"]["ranking"]["cpu_s"] == pytest.approx(1.5)
    assert summary["exponents_largest_two"]["ranking"]["wall_s"] == pytest.approx(1.5)
    assert summary["findings"] == [
        "ranking: wall_s grows as events^1.50 over every size (above 1.15)",
        "ranking: cpu_s grows as events^1.50 over every size (above 1.15)",
        "ranking: wall_s grows as events^1.50 between the two largest sizes (above 1.15)",
        "ranking: cpu_s grows as events^1.50 between the two largest sizes (above 1.15)",
    ]
    assert json.loads((tmp_path / "scale.json").read_text())["rows"][0] == {
        "preset": "tiny",
        "stage": "features",
        "events": 1_000,
        "wall_s": 10.0,
        "cpu_s": 15.0,
        "peak_rss_mb": 500.0,
    }

    class Page(HTMLParser):
        images, cells = 0, []

        def handle_starttag(self, tag, attrs):
            if tag == "img" and dict(attrs)["src"].startswith("data:image/png;base64,iVBOR"):
                self.images += 1

        def handle_data(self, data):
            self.cells.append(data.strip())

    page = Page()
    page.feed((tmp_path / "scale.html").read_text())
    assert page.images == 3  # wall, CPU and memory, each log-log
    assert "ranking: wall_s grows as events^1.50 over every size (above 1.15)" in page.cells and "1.50" in page.cells
    assert "medium: ranking_epochs=1" in page.cells


def test_a_stage_flat_at_small_sizes_is_flagged_by_its_largest_two():
    """Fixed costs hide the growth over every size; the two largest sizes show it."""
    results = {
        name: bench_result(n, features_s=10 + 1e-8 * n**1.6, ranking_s=1.0)
        for name, n in (("tiny", 1_000), ("default", 100_000), ("medium", 1_000_000), ("large", 10_000_000))
    }
    exponents, top = scale.fits(scale.rows(results)), scale.fits(scale.rows(results), largest=2)
    assert exponents["features"]["wall_s"] < 1.15 < top["features"]["wall_s"]


def test_cli_refuses_one_preset_and_unknown_ones(capsys):
    for presets in ("tiny", "tiny,huge"):
        with pytest.raises(SystemExit):
            scale.main(["--presets", presets])
    assert "needs two or more" in capsys.readouterr().err


def test_reuse_keeps_a_presets_json_and_runs_only_the_missing_ones(tmp_path, monkeypatch):
    ran = []

    def fake_run(command, check):
        preset = command[command.index("--data") + 1]
        ran.append(preset)
        (tmp_path / f"{preset}.json").write_text("{}")

    monkeypatch.setattr(scale.subprocess, "run", fake_run)
    (tmp_path / "large.json").write_text('{"kept": true}')
    assert scale.run_preset("large", tmp_path, None, 1, reuse=True).read_text() == '{"kept": true}'
    scale.run_preset("medium", tmp_path, None, 1, reuse=True)
    scale.run_preset("large", tmp_path, None, 1)  # without reuse: run again
    assert ran == ["medium", "large"]
