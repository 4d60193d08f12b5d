"""``write_report``: one self-contained HTML page that opens with the
findings (charts embedded as PNG, then tables), with ``findings.json``, the
chart files and the Parquet frames beside it."""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path

import pandas as pd

from analysis import charts, tables
from analysis.frames import COMPLETE_STATES
from analysis.parquet import export
from analysis.questions import findings as find
from analysis.questions import headline
from analysis.questions.text import by_question
from analysis.results import Results

REPORT_FILE = "report.html"
CHART_WORKERS = min(len(charts.CHARTS), os.cpu_count() or 1)  # processes drawing the charts
FINDINGS_FILE = "findings.json"
TRIAL_STATE_COLUMNS = [
    "experiment",
    "trial_id",
    "normalizer",
    "setting",
    "seed",
    "state",
    "epochs_done",
    "best_val_acc",
    "best_epoch",
    "error",
]
TABLES = {
    "Comparison (best setting per normalizer; medians over its runs)": tables.comparison,
    "Run-to-run variability of the best accuracy": tables.variability,
    "Sensitivity: change in median best accuracy per step": tables.sensitivity,
    "Best clamping settings": tables.best_settings,
}
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 80em; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; margin-bottom: 1.5em; }
th, td { padding: 0.2em 0.6em; border-bottom: 1px solid #ddd; text-align: right; }
img { max-width: 100%; } figure { margin: 0 0 2em 0; } pre { background: #f5f5f5; padding: 1em; }
.warning { color: #a40; }
.headline { border-left: 4px solid #c00; background: #fff3f3; padding: 0.3em 1em; font-weight: 600; }
li { margin-bottom: 0.3em; } .note { color: #555; }
li.worse, li.failed, li.unsupported { color: #a00; } li.better { color: #060; }
li.equivalent { color: #036; } li.inconclusive { color: #666; }
"""


def write_report(results: Results, out_dir: str | os.PathLike, **options) -> Path:
    """Write ``report.html`` and the files beside it; return the HTML path.

    ``write_report_and_findings`` with the findings left out of what it returns.

    Args:
        results: the results to report on.
        out_dir: the folder to write into; created if needed.
        **options: ``findings``, ``margin`` and ``confidence``, passed to
            ``write_report_and_findings``.

    Returns:
        The path of ``report.html``.

    Raises:
        ValueError: ``margin`` or ``confidence`` is not in (0, 1) (when the findings are computed here).
    """
    return write_report_and_findings(results, out_dir, **options)[0]


def write_report_and_findings(
    results: Results,
    out_dir: str | os.PathLike,
    findings: pd.DataFrame | None = None,
    margin: float = 0.01,
    confidence: float = 0.95,
) -> tuple[Path, pd.DataFrame]:
    """Write the HTML report and the files beside it; return the findings too.

    Writes into ``out_dir``: ``report.html`` (self-contained: the findings, the
    charts embedded as PNG, the tables, trial counts by state, the sweep specs,
    trial states and unreadable files), ``findings.json`` (records:
    ``pandas.read_json`` reads it back), ``charts/*.png`` and the Parquet frames
    (``analysis.export``), replacing files of those names. Charts and tables
    show complete trials only (finished or diverged). The charts are drawn in
    ``CHART_WORKERS`` forked processes while this one computes the findings,
    the Parquet frames and the rest of the page.

    Args:
        results: the results to report on.
        out_dir: the folder to write into; created if needed.
        findings: the findings to show; default ``analysis.findings(results, margin, confidence)``.
        margin: the equivalence margin, in accuracy (default 0.01, one point); also
            named in the page's note on the findings.
        confidence: the confidence level of the intervals (default 0.95); also named
            in that note.

    Returns:
        ``(path of report.html, the findings)``: the terminal prints the findings.

    Raises:
        ValueError: ``margin`` or ``confidence`` is not in (0, 1) (when ``findings`` is None).
    """
    out = Path(out_dir)
    done = results.where(results.trials["state"].isin(COMPLETE_STATES))
    with charts.saving(done, out / "charts", workers=CHART_WORKERS) as drawn:
        if findings is None:
            findings = find(results, margin=margin, confidence=confidence)
        export(results, out)
        findings.to_json(out / FINDINGS_FILE, orient="records", indent=2, force_ascii=False)
        before = _section("findings", "Findings", findings_html(findings, margin, confidence))
        after = _sections_after_charts(results)
        chart_files = drawn()
    charts_html = "".join(_figure(name, files) for name, files in chart_files.items())
    sections = [before, _section("charts", "Charts", charts_html), after]
    title = "Sweep report: " + ", ".join(results.paths)
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{''.join(sections)}</body></html>"
    )
    path = out / REPORT_FILE
    path.write_text(page, encoding="utf-8")
    return path, findings


def _sections_after_charts(results: Results) -> str:
    """Tables, trial counts by state, the sweep specs, trial states and unreadable files."""
    tables_html = "".join(
        f"<h3>{html.escape(title)}</h3>{_table(table(results.trials))}" for title, table in TABLES.items()
    )
    states = pd.crosstab(results.trials["experiment"], results.trials["state"]).reset_index()
    return "".join(
        [
            _section("tables", "Tables", tables_html),
            _section("summary", "Trials by state", _table(states)),
            _section("spec", "Sweep spec", _specs(results)),
            _section("trials", "Trial states", _table(results.trials[TRIAL_STATE_COLUMNS])),
            _section("unreadable", "Files that could not be read", _warnings(results.warnings)),
        ]
    )


def findings_html(findings: pd.DataFrame, margin: float, confidence: float) -> str:
    """The findings as an HTML fragment for the report.

    A note on the intervals and the margin, the ``headline`` lines, then one
    sentence per finding grouped by question, each marked with its verdict
    as a CSS class; the findings past ``SHOWN_PER_QUESTION`` in a group are
    folded into a ``<details>`` element.

    Args:
        findings: the frame ``analysis.findings`` returns.
        margin: the equivalence margin the findings used, in accuracy (0.01 = one point).
        confidence: the confidence level of their intervals.

    Returns:
        The HTML, text escaped.
    """
    note = (
        f"<p class='note'>{confidence:.0%} bootstrap intervals over runs; <i>equivalent</i> means the interval "
        f"lies within \u00b1{100 * margin:.1f} accuracy points. Every number is in {FINDINGS_FILE}.</p>"
    )
    top = "".join(f"<p class='headline'>{html.escape(line)}</p>" for line in headline(findings, margin))
    groups = []
    for question, shown, folded in by_question(findings):
        more = f"<details><summary>{len(folded)} more</summary>{_sentences(folded)}</details>" if len(folded) else ""
        groups.append(f"<h3>{html.escape(question)}</h3>{_sentences(shown)}{more}")
    return note + top + "".join(groups)


def _sentences(rows: pd.DataFrame) -> str:
    return (
        "<ul>"
        + "".join(
            f"<li class='{html.escape(str(v))}'>{html.escape(s)}</li>"
            for v, s in zip(rows["verdict"], rows["sentence"], strict=False)
        )
        + "</ul>"
    )


def _section(anchor: str, title: str, body: str) -> str:
    return f"<section id='{anchor}'><h2>{html.escape(title)}</h2>{body}</section>"


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, border=0, na_rep="", float_format="{:.4g}".format)


def _specs(results: Results) -> str:
    return "".join(
        f"<h3>{html.escape(name)}</h3>"
        + (
            f"<pre>{html.escape(results.specs[name])}</pre>"
            if name in results.specs
            else f"<p>No spec.yaml in {html.escape(str(path))}.</p>"
        )
        for name, path in results.paths.items()
    )


def _figure(name: str, files: list[Path] | str) -> str:
    caption = html.escape(name.replace("_", " "))
    if isinstance(files, str):
        return f"<figure><figcaption>{caption}: not drawn, {html.escape(files)}.</figcaption></figure>"
    png = base64.b64encode(files[0].read_bytes()).decode("ascii")
    return f"<figure><img alt='{caption}' src='data:image/png;base64,{png}'><figcaption>{caption}</figcaption></figure>"


def _warnings(warnings: list[str]) -> str:
    if not warnings:
        return "<p>Every file was read.</p>"
    return "<ul>" + "".join(f"<li class='warning'>{html.escape(w)}</li>" for w in warnings) + "</ul>"
