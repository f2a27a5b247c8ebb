"""Prometheus rules, scrape example and Grafana dashboard: valid, and only contract metrics.

promtool (Debian package `prometheus`) checks the rule and config syntax and
runs unit tests of the alerts below; without it those tests skip with the
reason shown. The metric-name checks need nothing but Python.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "etc/prometheus/exactmaild-rules.yml"
SCRAPE = REPO / "etc/prometheus/scrape-example.yml"
DASHBOARD = REPO / "etc/grafana/exactmaild-dashboard.json"

# The metric names of the contract (DESIGN.md) plus the extras the daemon
# exports; `up` is Prometheus' own.
METRICS = {
    "exactmaild_sent_total",
    "exactmaild_sent_in_window",
    "exactmaild_daily_limit",
    "exactmaild_daily_limit_remaining",
    "exactmaild_queue_messages",
    "exactmaild_send_failures_total",
    "exactmaild_received_total",
    "exactmaild_receive_checks_total",
    "exactmaild_last_receive_check_timestamp_seconds",
    "exactmaild_config_reloads_total",
    "exactmaild_config_last_reload_successful",
    "exactmaild_build_info",
    "exactmaild_oldest_queued_age_seconds",
    "exactmaild_limit_window_reset_seconds",
    "exactmaild_last_send_timestamp_seconds",
    "exactmaild_queue_paused",
    "exactmaild_storage_ok",
    "exactmaild_sent_elsewhere_in_window",
    "up",
}

PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}

promtool = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    promtool is None,
    reason="promtool not installed (apt-get install --no-install-recommends prometheus)",
)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (a small lexer, not a parser).

    Label matchers, ranges and strings are cut out, then grouping clauses
    (`by (...)`, `on (...)`, ...), then every remaining identifier that is not
    a function call or a keyword is a metric name.
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])([A-Za-z_:][\w:]*)(\s*\()?", text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def test_metric_name_lexer() -> None:
    expr = (
        'sum without (state, lane) (exactmaild_queue_messages{state=~"queued|deferred"}) '
        "> on (instance, job) exactmaild_daily_limit_remaining and time() - "
        'rate(up{job="x"}[$__rate_interval]) > 26 * 3600 unless bogus_metric offset 5m'
    )
    assert metric_names(expr) == {
        "exactmaild_queue_messages",
        "exactmaild_daily_limit_remaining",
        "up",
        "bogus_metric",
    }


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard_exprs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            else:
                yield from dashboard_exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from dashboard_exprs(item)


# --- rules -------------------------------------------------------------------


@needs_promtool
def test_promtool_check_rules() -> None:
    result = subprocess.run(
        [str(promtool), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_check_scrape_example(tmp_path: Path) -> None:
    # rule_files is relative to the config: check the pair as installed side by side.
    shutil.copy(SCRAPE, tmp_path)
    shutil.copy(RULES, tmp_path)
    result = subprocess.run(
        [str(promtool), "check", "config", str(tmp_path / SCRAPE.name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_scrape_example_two_labelled_instances() -> None:
    doc = yaml.safe_load(SCRAPE.read_text())
    (job,) = doc["scrape_configs"]
    assert job["job_name"] == "exactmaild"  # ExactmaildDown matches job="exactmaild"
    targets = {t: sc["labels"]["instance"] for sc in job["static_configs"] for t in sc["targets"]}
    assert set(targets) == {"127.0.0.1:9725", "127.0.0.1:9726"}
    assert len(set(targets.values())) == 2


def test_rules_use_only_known_metrics() -> None:
    found = rules()
    expected = {
        "ExactmaildDailyLimitNearlyUsed",
        "ExactmaildQueueStuck",
        "ExactmaildSendsPaused",
        "ExactmaildReceiveChecksFailing",
        "ExactmaildLastReceiveCheckTooOld",
        "ExactmaildConfigReloadFailed",
        "ExactmaildDown",
        "ExactmaildStorageProblem",
    }
    assert expected <= {r["alert"] for r in found}
    for rule in found:
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        assert names <= METRICS, (rule["alert"], names - METRICS)
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert rule["annotations"]["summary"]


# Alert unit tests (promtool test rules). Annotations are stripped from a copy
# of the rules so the expectations name labels only; their templates are
# still checked by `promtool check rules` above.
RULE_TESTS = """
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'exactmaild_daily_limit{job="exactmaild",instance="main"}'
        values: '500x30'
      - series: 'exactmaild_daily_limit_remaining{job="exactmaild",instance="main"}'
        values: '100-10x9 0x20'
      - series: 'exactmaild_daily_limit{job="exactmaild",instance="branch"}'
        values: '0x30'
      - series: 'exactmaild_daily_limit_remaining{job="exactmaild",instance="branch"}'
        values: '0x30'
      - series: 'exactmaild_oldest_queued_age_seconds{job="exactmaild",instance="main"}'
        values: '7200x30'
      - series: >-
          exactmaild_queue_messages{job="exactmaild",instance="main",state="queued",lane="normal"}
        values: '2x30'
      - series: >-
          exactmaild_queue_messages{job="exactmaild",instance="main",state="queued",lane="urgent"}
        values: '1x30'
      - series: 'exactmaild_queue_messages{job="exactmaild",instance="main",state="deferred"}'
        values: '0x30'
      - series: 'exactmaild_oldest_queued_age_seconds{job="exactmaild",instance="branch"}'
        values: '7200x30'
      - series: 'exactmaild_queue_messages{job="exactmaild",instance="branch",state="queued"}'
        values: '0x30'
      - series: 'exactmaild_queue_paused{job="exactmaild",instance="main"}'
        values: '1x30'
      - series: 'exactmaild_receive_checks_total{job="exactmaild",instance="main",result="error"}'
        values: '0+1x30'
      - series: 'exactmaild_receive_checks_total{job="exactmaild",instance="branch",result="error"}'
        values: '0+1x30'
      - series: 'exactmaild_receive_checks_total{job="exactmaild",instance="branch",result="ok"}'
        values: '0+1x30'
      - series: 'exactmaild_config_last_reload_successful{job="exactmaild",instance="main"}'
        values: '1x10 0x20'
      - series: 'exactmaild_storage_ok{job="exactmaild",instance="main"}'
        values: '1x30'
      - series: 'up{job="exactmaild",instance="main"}'
        values: '1x10 0x20'
    alert_rule_test:
      - eval_time: 3m
        alertname: ExactmaildDailyLimitNearlyUsed
        exp_alerts: []
      - eval_time: 20m
        alertname: ExactmaildDailyLimitNearlyUsed
        exp_alerts:
          - exp_labels: {severity: warning, job: exactmaild, instance: main}
      - eval_time: 20m
        alertname: ExactmaildQueueStuck
        exp_alerts:
          - exp_labels: {severity: warning, job: exactmaild, instance: main}
      - eval_time: 20m
        alertname: ExactmaildQueueExceedsRemainingLimit
        exp_alerts: []
      - eval_time: 28m
        alertname: ExactmaildQueueExceedsRemainingLimit
        exp_alerts:
          - exp_labels: {severity: info, job: exactmaild, instance: main}
      - eval_time: 10m
        alertname: ExactmaildSendsPaused
        exp_alerts: []
      - eval_time: 20m
        alertname: ExactmaildSendsPaused
        exp_alerts:
          - exp_labels: {severity: critical, job: exactmaild, instance: main}
      - eval_time: 25m
        alertname: ExactmaildReceiveChecksFailing
        exp_alerts:
          - exp_labels: {severity: critical, job: exactmaild, instance: main, result: error}
      - eval_time: 5m
        alertname: ExactmaildConfigReloadFailed
        exp_alerts: []
      - eval_time: 15m
        alertname: ExactmaildConfigReloadFailed
        exp_alerts:
          - exp_labels: {severity: warning, job: exactmaild, instance: main}
      - eval_time: 20m
        alertname: ExactmaildStorageProblem
        exp_alerts: []
      - eval_time: 20m
        alertname: ExactmaildDown
        exp_alerts:
          - exp_labels: {severity: critical, job: exactmaild, instance: main}
  # Samples every minute: with sparser ones the series goes stale between
  # them (5 m lookback) and no `for:` is ever satisfied.
  - interval: 1m
    input_series:
      - series: 'exactmaild_last_receive_check_timestamp_seconds{job="exactmaild",instance="main"}'
        values: '60x1700'
      - series: 'exactmaild_last_receive_check_timestamp_seconds{job="exactmaild",instance="never"}'
        values: '0x1700'
      - series: 'exactmaild_storage_ok{job="exactmaild",instance="main"}'
        values: '0x1700'
    alert_rule_test:
      - eval_time: 20h
        alertname: ExactmaildLastReceiveCheckTooOld
        exp_alerts: []
      - eval_time: 27h
        alertname: ExactmaildLastReceiveCheckTooOld
        exp_alerts:
          - exp_labels: {severity: warning, job: exactmaild, instance: main}
      - eval_time: 1h
        alertname: ExactmaildStorageProblem
        exp_alerts:
          - exp_labels: {severity: critical, job: exactmaild, instance: main}
"""


@needs_promtool
def test_alerts_fire_when_they_should(tmp_path: Path) -> None:
    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(doc))
    tests = yaml.safe_load(RULE_TESTS)
    tests["rule_files"] = ["rules.yml"]
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests))
    result = subprocess.run(
        [str(promtool), "test", "rules", "tests.yml"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- dashboard -----------------------------------------------------------------


def test_dashboard_is_grafana_json_with_instance_variable() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "exactmaild"
    assert isinstance(dash["schemaVersion"], int)
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert "instance" in variables
    assert "exactmaild_build_info" in variables["instance"]["definition"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
        for target in panel.get("targets", []):
            # Every query is filtered by the instance variable.
            assert 'instance=~"$instance"' in target["expr"], panel["title"]


def test_dashboard_covers_the_questions() -> None:
    dash = json.loads(DASHBOARD.read_text())
    by_title = {
        p["title"]: " ".join(t["expr"] for t in p.get("targets", [])) for p in dash["panels"]
    }
    wanted = {
        "Sent in limit window vs daily limit": {
            "exactmaild_sent_in_window",
            "exactmaild_daily_limit",
        },
        "Remaining today": {"exactmaild_daily_limit_remaining"},
        "Queue depth by state": {"exactmaild_queue_messages"},
        "Oldest queued message": {"exactmaild_oldest_queued_age_seconds"},
        "Receive checks": {"exactmaild_receive_checks_total"},
        "Last successful receive check": {"exactmaild_last_receive_check_timestamp_seconds"},
        "Config reloads": {"exactmaild_config_reloads_total"},
        "Sent and send failures": {"exactmaild_send_failures_total"},
    }
    for title, names in wanted.items():
        assert title in by_title
        assert names <= metric_names(by_title[title]), title


def test_dashboard_uses_only_known_metrics() -> None:
    exprs = list(dashboard_exprs(json.loads(DASHBOARD.read_text())))
    assert len(exprs) >= 10
    for expr in exprs:
        names = metric_names(expr)
        assert names, expr
        assert names <= METRICS, (expr, names - METRICS)
