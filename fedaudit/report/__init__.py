"""The leakage report: an audit's results -> :class:`LeakageReport` -> JSON, Markdown, HTML.

A leaf of the package: it reads only the results JSON that ``fedaudit audit`` writes and imports
nothing but the ground floor. The report's JSON form is the source of truth; the renderers read
only it::

    from fedaudit.report import build_report, load_results, write_report

    report = build_report(load_results("audit-results")).to_dict()
    write_report(report, "audit-results/report", formats=("html", "md", "json"))
"""

from __future__ import annotations

from fedaudit.report.build import build_report, settings_above, severity_of
from fedaudit.report.model import LeakageReport
from fedaudit.report.render import FORMATS, write_html, write_json, write_markdown, write_report
from fedaudit.report.schema import (
    REPORT_SCHEMA,
    REPORT_SCHEMA_VERSION,
    RESULTS_SCHEMA,
    RESULTS_SCHEMA_VERSION,
    ReportError,
    load_results,
    schema_document,
    validate_report,
    validate_results,
)

__all__ = [
    "FORMATS",
    "LeakageReport",
    "REPORT_SCHEMA",
    "REPORT_SCHEMA_VERSION",
    "RESULTS_SCHEMA",
    "RESULTS_SCHEMA_VERSION",
    "ReportError",
    "build_report",
    "load_results",
    "schema_document",
    "settings_above",
    "severity_of",
    "validate_report",
    "validate_results",
    "write_html",
    "write_json",
    "write_markdown",
    "write_report",
]
