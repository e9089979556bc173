"""`bench report`: console tables, md/csv/json exports and the self-contained HTML report, the
latter opened in a real headless browser (Debian's chromium)."""
import contextlib
import csv
import html
import io
import json
import os
import re
import shutil
import zlib
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.record import store
from bench.cli import main
from conftest import run_cli
from test_analysis import record, sweep

CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def write_cell(root: Path, rec: dict, gpu: bool = False) -> Path:
    """One cell folder as the harness writes it: record.json, steps.parquet (warm-up flagged),
    telemetry.parquet (phases, CPU, optionally GPU busy/power) and samples.npz."""
    cell_dir = Path(root) / rec["cell_id"]
    store.write_json(cell_dir / store.RECORD, rec)
    if rec["status"] != "ok":
        return cell_dir
    warmup, timed = rec["cell"]["warmup"], rec["timing"]["timed_steps"]
    seed = zlib.crc32(rec["cell_id"].encode())
    rng = np.random.default_rng(seed)
    per_step = rec["timing"]["train_time_s"] / timed
    times = np.concatenate([np.full(warmup, 3 * per_step),
                            per_step * (1 + 0.05 * rng.standard_normal(timed))])
    store.write_table(cell_dir / store.STEPS, pd.DataFrame({
        "step": np.arange(warmup + timed), "loss": np.linspace(0.3, 0.02, warmup + timed),
        "step_time_s": times, "data_wait_s": times * 0.01,
        "warmup": np.arange(warmup + timed) < warmup}))
    start = rec["telemetry"]["timed_start_s"]
    t = start + np.arange(-2.0, rec["timing"]["train_time_s"] + 2.0, 0.5)
    phase = np.where(t < start - 1, "setup", np.where(
        t < start, "warmup", np.where(t <= start + rec["timing"]["train_time_s"], "timed",
                                      "eval")))
    table = pd.DataFrame({"t_s": t, "phase": phase,
                          "proc_cpu_pct": 95.0 * rec["cell"]["devices"] + rng.normal(0, 3, len(t)),
                          "sys_cpu_pct_mean": 90.0 + rng.normal(0, 3, len(t))})
    if gpu:
        for i in range(rec["cell"]["devices"]):
            table[f"gpu_busy_pct_{i}"] = np.where(phase == "timed", 92.0, 5.0)
            table[f"power_w_{i}"] = np.where(phase == "timed", 400.0, 80.0)
    store.write_table(cell_dir / store.TELEMETRY, table)
    clean = np.random.default_rng(1).random((4, 16, 16)).astype("float32")
    noisy = np.clip(clean + 0.1 * np.random.default_rng(2).standard_normal(clean.shape), 0, 1)
    np.savez_compressed(cell_dir / "samples.npz", sigma=np.float32(0.1),
                        noisy=noisy.astype("float32"),
                        output=(0.5 * clean + 0.5 * noisy).astype("float32"), clean=clean)
    return cell_dir


def make_results(root: Path, gpu: bool = False, models=("unet", "unetpp")) -> Path:
    """Two models × {single, dp ×2, ddp ×2 fp32, ddp ×2 bf16} × 3 repeats, one workload each."""
    root = Path(root)
    kw = {"gpu": True, "device_type": "cuda"} if gpu else {}
    for model in models:
        for rec in sweep(f"fp-{model}", model=model, **kw):
            write_cell(root, rec, gpu=gpu)
    return root


def cli(*args) -> tuple[int, str, str]:
    """`python -m bench ARGS` in this process (one interpreter start saved per call):
    exit status, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return make_results(tmp_path_factory.mktemp("results"), gpu=True)


@pytest.fixture(scope="module")
def rendered(results, tmp_path_factory):
    """One `bench report DIR --html FILE` run: its console output and the HTML file."""
    page = tmp_path_factory.mktemp("html") / "report.html"
    code, out, err = cli("report", results, "--html", page)
    assert code == 0, err
    return out, page


def test_console_report_shows_speedups_and_verdicts(rendered):
    text, page = rendered
    assert f"HTML report: {page}" in text
    assert "speedup summary — unet" in text and "speedup summary — unetpp" in text
    assert "1.80×" in text and "2.70×" in text        # ddp fp32 / bf16 against single fp32
    assert "90% s" in text                              # efficiency, strong scaling
    assert "equivalent" in text and "worse" in text     # ddp fp32 parity / bf16 accuracy loss
    assert "AMP gain" in text and "DDP vs DataParallel" in text
    assert "paired t (n=3)" in text


def test_csv_export_has_the_known_numbers(results):
    code, out, err = cli("report", results, "--format", "csv")
    assert code == 0, err
    table = pd.read_csv(io.StringIO(out))
    assert len(table) == 8  # 2 models × 4 configurations
    ddp = table[(table["cell.model"] == "unet") & (table["cell.strategy"] == "ddp")
                & (table["cell.precision"] == "fp32")].iloc[0]
    assert ddp["speedup_throughput"] == pytest.approx(1.8)
    assert ddp["efficiency"] == pytest.approx(0.9)
    assert ddp["psnr_verdict"] == "equivalent"
    assert ddp["energy_per_img_j"] == pytest.approx(1.0)
    assert next(csv.reader(io.StringIO(out)))[:2] == ["cell.model", "noise"]


def test_json_and_markdown_exports_to_files(results, tmp_path):
    target = tmp_path / "out" / "report.json"
    code, _, err = cli("report", results, "--format", "json", "--output", target)
    assert code == 0, err
    doc = json.loads(target.read_text())
    assert doc["baseline"] == "single ×1 fp32" and doc["sigma"] == 0.1
    assert {"summary", "quality", "amp_gain", "ddp_vs_dp", "notes", "unreadable"} <= set(doc)
    amp = [r for r in doc["amp_gain"] if r["cell.model"] == "unet"][0]
    assert amp["gain"] == pytest.approx(1.5) and amp["psnr_verdict"] == "worse"
    md = tmp_path / "report.md"  # format taken from the suffix
    code, _, err = cli("report", results, "--output", md)
    assert code == 0, err
    text = md.read_text()
    assert text.startswith("# bench report") and "| config | devices |" in text
    assert "## AMP gain" in text and "worse" in text


@pytest.fixture(scope="module")
def two_site():
    """The two-site plug-in, whose privacy audit is a registered report section."""
    from bench import plugins
    plugins.load(["bench.twosite"])
    return plugins.report_sections()


def test_plugin_section_renders_where_the_privacy_audit_stood(two_site, tmp_path):
    from bench import analysis
    from bench.twosite.audit import audit_level
    from reports import console as rc
    from reports.html import render_html
    audited = record(cell_id="audited")
    audited["audit"] = {"measured_at": "training run", "target": "clean",
                        "clean_data_left_site_one": True,
                        "levels": [audit_level(q) for q in audited["quality"]]}
    write_cell(tmp_path, audited)
    # Every training run audits itself; a one-site run is no privacy question: no table.
    one_site = analysis.compare_configs(store.load(tmp_path), sections=two_site)
    assert one_site.sections.get("privacy") is None or one_site.sections["privacy"].empty
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc.render_report(one_site)
    assert "privacy audit" not in out.getvalue()
    # The same cell trained on an obfuscated folder (Site Two) is one.
    audited["two_site"] = {"clean_data_left_site_one": True, "obfuscation": {"seed": 0}}
    write_cell(tmp_path, audited)
    frame = store.load(tmp_path)
    comp = analysis.compare_configs(frame, sections=two_site)
    assert len(comp.sections["privacy"]) == 1
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc.render_report(comp)
    text = " ".join(out.getvalue().split())
    assert text.index("privacy audit") > text.index("quality parity")
    assert "not a privacy guarantee" in text and "20.00" in text  # protection PSNR
    page = render_html(frame, comp, tmp_path)
    assert page.index("Denoising quality") < page.index("<h2>Privacy audit</h2>") < \
        page.index("Sample test images")
    plain = analysis.compare_configs(frame)  # computed without sections: no audit shown
    md = rc.export_report(comp, "md")  # the exports never carried the audit
    assert "rivacy" not in md and md == rc.export_report(plain, "md")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc.render_report(plain)
    assert "privacy audit" not in out.getvalue()
    assert "Privacy audit" not in render_html(frame, plain, tmp_path)


def test_missing_folder_exits_2_in_a_real_process(tmp_path):
    out = run_cli("report", tmp_path / "nothing-here", timeout=120)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("bench: error: ")
    assert str(tmp_path / "nothing-here") in lines[0] and out.stdout == ""


@pytest.mark.parametrize("make", ["empty", "file"])
def test_empty_folder_or_file_is_bad_input(tmp_path, make):
    target = tmp_path / "results"
    if make == "empty":
        target.mkdir()
    else:
        target.write_text("not a folder")
    code, out, err = cli("report", target)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and str(target) in lines[0] and out == ""


def test_bad_options_are_bad_input(results, tmp_path):
    code, _, err = cli("report", results, "--baseline", "ddp:x")
    assert code == 2 and "ddp:x" in err
    code, _, err = cli("report", results, "--output", tmp_path / "report.txt")
    assert code == 2 and "report.txt" in err
    code, _, err = cli("report", results, "--margin-psnr", "-1")
    assert code == 2 and "-1" in err


def test_unreadable_record_is_listed_not_fatal(tmp_path):
    root = tmp_path / "r"
    for rec in (record("unet", "single", 1, "fp32", 0, fingerprint="fp-unet"),
                record("unet", "ddp", 2, "fp32", 0, 190.0, fingerprint="fp-unet")):
        write_cell(root, rec)
    broken = root / "unet-fsdp2-fp32-r0-broken"
    broken.mkdir()
    (broken / store.RECORD).write_text('{"cell_id": "unet-fsdp2", "sta')
    write_cell(root, record("unet", "ddp", 4, "fp32", 0, status="failed",
                            fingerprint="fp-unet"))
    page = tmp_path / "report.html"
    code, out, err = cli("report", root, "--html", page)
    assert code == 0, err
    assert "unreadable record" in out and "broken" in out and "rank 1 died" in out
    assert "1.90×" in out
    text = page.read_text()
    assert "unet-fsdp2-fp32-r0-broken" in text and "rank 1 died" in text


# --- the HTML report ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def report_html(rendered):
    return rendered[1]


# groups: 2 × (time bars, speedup/efficiency, step times, telemetry) + 2 quality + 1 samples
EXPECTED_PLOTS = 2 * 4 + 2 + 1


def test_html_is_self_contained_and_complete(report_html):
    text = report_html.read_text()
    assert "<script" not in text.lower() and "<link" not in text.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", text, re.I)
    assert "url(" not in text and "@import" not in text and "@font-face" not in text
    images = re.findall(r'<img [^>]*src="([^"]+)"', text)
    assert len(images) == EXPECTED_PLOTS
    assert all(src.startswith("data:image/png;base64,") for src in images)
    for needle in ("How this was measured", "cuda-events",
                   "Warm-up</b>: 2 step(s)", "share of each sample period in which any kernel",
                   "Environment of every run", "H200 H200", "node1", "paired t (n=3)",
                   "Sample test images", "training time per configuration",
                   "telemetry timelines", "step-time distributions",
                   "speedup and efficiency vs devices", "quality vs noise level"):
        assert needle in text, needle


def _probe_page(src: Path, dst: Path) -> None:
    """A copy of the page with a probe in <head>: it records script errors and failed loads
    (capturing 'error' listener), then on 'load' writes image/SVG counts, broken images and
    fetched resources into <pre id="probe"> for --dump-dom."""
    probe = """<script>
window.__errors = [];
window.addEventListener('error', function (e) {
  var t = e.target || {};
  window.__errors.push(e.message || ('failed to load ' + (t.src || t.href)));
}, true);
window.addEventListener('load', function () {
  var imgs = [].slice.call(document.images);
  var out = document.createElement('pre');
  out.id = 'probe';
  out.textContent = JSON.stringify({
    imgs: imgs.length,
    broken: imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); }).length,
    svgs: document.querySelectorAll('svg').length,
    tables: document.querySelectorAll('table').length,
    resources: performance.getEntriesByType('resource').map(function (r) { return r.name; }),
    errors: window.__errors});
  document.body.appendChild(out);
});
</script>"""
    dst.write_text(src.read_text().replace("<head>", "<head>" + probe, 1))


def _chromium(tmp_path: Path, *args) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    return subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                           "--enable-logging=stderr", "--v=0", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def _load(tmp_path: Path, page: Path) -> tuple[dict, list[str]]:
    probed = tmp_path / ("probed-" + page.name)
    _probe_page(page, probed)
    run = _chromium(tmp_path, "--virtual-time-budget=10000", "--dump-dom", probed.as_uri())
    match = re.search(r'<pre id="probe">(.*?)</pre>', run.stdout, re.S)
    assert match, f"page did not finish loading: {run.stderr[-2000:]}"
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    return json.loads(html.unescape(match.group(1))), console


needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="needs chromium (apt-get install chromium) to open the HTML "
                             "report in a real browser")


@needs_chromium
def test_probe_catches_broken_pages(tmp_path):
    """The browser check itself: a broken image and a script error must both be seen."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>'
                   '<img src="missing.png"><script>undefinedFunction();</script></body></html>')
    probe, console = _load(tmp_path, bad)
    assert probe["imgs"] == 1 and probe["broken"] == 1
    assert any("missing.png" in e for e in probe["errors"])
    assert any("undefinedFunction" in e for e in probe["errors"])
    assert any("undefinedFunction" in line for line in console)


@needs_chromium
def test_html_report_renders_in_chromium(report_html, tmp_path):
    probe, console = _load(tmp_path, report_html)
    assert probe["errors"] == [] and console == []
    assert probe["imgs"] == EXPECTED_PLOTS and probe["broken"] == 0
    assert probe["resources"] == []  # nothing fetched
    assert probe["tables"] >= 8
    shot = tmp_path / "report.png"
    run = _chromium(tmp_path, "--hide-scrollbars", "--window-size=1280,2400",
                    f"--screenshot={shot}", report_html.as_uri())
    assert shot.exists(), run.stderr[-2000:]
    assert shot.stat().st_size > 50_000
    from PIL import Image
    with Image.open(shot) as im:
        assert im.size == (1280, 2400)
        grey = np.asarray(im.convert("L"), dtype=float)
    assert grey.std() > 20  # not a blank page: text, tables and plots drawn


def test_intervals_that_reach_impossible_values_are_not_drawn():
    # Two repeats far apart: the t interval (1 dof) of the training time reaches below 0 s and
    # SSIM's below −1; neither is drawn, each point is marked and the legend says why.
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd

    from reports import plots

    assert list(plots.readable([-3.0, 1.0, np.nan], [9.0, 2.0, np.nan])) == [False, True, True]
    assert list(plots.readable([-1.4, 0.5], [0.9, 1.2], -1.0, 1.0)) == [False, False]
    summary = pd.DataFrame({"config": ["single", "ddp"], "cell.devices": [1, 2],
                            "cell.precision": ["fp32", "fp32"], "is_baseline": [True, False],
                            "train_time_mean": [3.0, 2.0], "train_time_ci_low": [-3.0, 1.5],
                            "train_time_ci_high": [9.0, 2.5], "cell_ids": [["a"], ["b"]]})
    repeats = pd.DataFrame({"cell_id": ["a", "b"], "train_time_nominal_s": [3.0, 2.0]})
    fig = plots.train_time_points.__wrapped__(summary, repeats, 0.95)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    assert plots.TOO_WIDE in [t.get_text() for t in ax.get_legend().get_texts()]
    plt.close(fig)
    quality = pd.DataFrame({"metric": ["ssim", "ssim"], "config": ["single", "ddp"],
                            "cell.devices": [1, 2], "cell.precision": ["fp32", "fp32"],
                            "fingerprint": ["f", "f"], "sigma": [0.1, 0.1],
                            "mean": [0.8, 0.79], "ci_low": [-1.4, 0.78], "ci_high": [3.0, 0.80],
                            "noisy_mean": [0.3, 0.3]})
    fig = plots.quality_vs_noise.__wrapped__(quality, 0.95)
    assert plots.TOO_WIDE in [t.get_text() for t in fig.legends[0].get_texts()]
    plt.close(fig)


def test_a_model_worse_than_its_noisy_input_is_flagged(tmp_path):
    """PSNR 17.96 against the noisy input's 20.00 (and SSIM below it): the console and the
    HTML say so beside the configuration; a model that beats its input gets no such line."""
    from bench import analysis
    from reports import console as rc
    from reports.html import render_html
    for r in range(2):
        write_cell(tmp_path, record(repeat=r, psnr=30.0 + r, ssim=0.8))
        write_cell(tmp_path, record(strategy="ddp", devices=2, repeat=r, psnr=17.96,
                                    ssim=0.15, throughput=180.0 + r))
    frame = store.load(tmp_path)
    comp = analysis.compare_configs(frame)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc.render_report(comp)
    text = " ".join(out.getvalue().split())
    assert "ddp ×2 fp32: the model scores worse than its own noisy input (PSNR 17.96 vs " \
           "20.00 dB, SSIM 0.1500 vs 0.2000)" in text
    assert "single ×1 fp32: the model scores worse" not in text
    assert "scores worse than its own noisy input" in html.unescape(
        render_html(frame, comp, tmp_path))
