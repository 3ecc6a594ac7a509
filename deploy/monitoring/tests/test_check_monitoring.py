"""Unit tests of check_monitoring.py's parsers: a parser that silently
misses a metric or a heading would let the checks pass on broken rules.
Run: python3 -m unittest discover -s deploy/monitoring/tests"""

import os
import stat
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(__file__))

import check_monitoring as cm  # noqa: E402


class MetricReferences(unittest.TestCase):
    def names(self, expr):
        return sorted({name for name, _ in cm.metric_references(expr)})

    def test_functions_grouping_labels_and_windows_are_not_metrics(self):
        expr = (
            'sum by (env, route) (rate(http_server_request_duration_seconds_count'
            '{route=~"/api/sessions/\\\\{id\\\\}/messages", status=~"5.."}[5m]))'
            ' / on (env) group_left (route) heartrule:http_requests:rate5m > 0.05'
        )
        self.assertEqual(
            self.names(expr),
            ["heartrule:http_requests:rate5m", "http_server_request_duration_seconds_count"],
        )

    def test_selector_labels_are_reported(self):
        refs = cm.metric_references('rate(heartrule_db_errors_total{kind=~"a|b", env!="x"}[5m])')
        self.assertEqual(refs, [("heartrule_db_errors_total", {"kind", "env"})])

    def test_numbers_strings_and_keywords_are_skipped(self):
        expr = 'up == 0 and on () vector(1e3) > bool 2.5e-1 or label_replace(up, "a", "b_c", "d", ".*")'
        self.assertEqual(self.names(expr), ["up"])

    def test_bare_metric_without_selector(self):
        self.assertEqual(self.names("process_resident_memory_bytes / process_max_fds"),
                         ["process_max_fds", "process_resident_memory_bytes"])


class Durations(unittest.TestCase):
    def test_seconds(self):
        self.assertEqual(cm.seconds("2m"), 120)
        self.assertEqual(cm.seconds("1h30m"), 5400)
        self.assertEqual(cm.seconds("90s"), 90)
        with self.assertRaises(ValueError):
            cm.seconds("2 minutes")


class Anchors(unittest.TestCase):
    def test_github_anchor(self):
        self.assertEqual(cm.github_anchor("LlmErrorRatioHigh"), "llmerrorratiohigh")
        self.assertEqual(cm.github_anchor("Before you start"), "before-you-start")
        self.assertEqual(cm.github_anchor("SLIs (recording rules)"), "slis-recording-rules")


class Catalogue(unittest.TestCase):
    def test_histograms_expand_into_their_series(self):
        table = (
            "| Metric | Type | Labels | Emitted by | Description |\n"
            "|---|---|---|---|---|\n"
            "| `a_seconds` | histogram | `x`, `y` | s | d |\n"
            "| `b_total` | counter | — | s | d |\n"
        ) + "".join(f"| `g{i}` | gauge | — | s | d |\n" for i in range(10))
        with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as script:
            script.write("#!/bin/sh\ncat <<'EOF'\n" + table + "EOF\n")
        os.chmod(script.name, os.stat(script.name).st_mode | stat.S_IXUSR)
        try:
            series = cm.catalogue(script.name)
        finally:
            os.unlink(script.name)
        self.assertEqual(series["a_seconds_bucket"], {"x", "y", "le"})
        self.assertEqual(series["a_seconds_count"], {"x", "y"})
        self.assertEqual(series["a_seconds_sum"], {"x", "y"})
        self.assertEqual(series["b_total"], set())
        self.assertNotIn("a_seconds", series)


if __name__ == "__main__":
    unittest.main()
