#!/usr/bin/env python3
"""Checks the Grafana provisioning under deploy/grafana without running Grafana.

- the dashboard is valid JSON with unique panel ids, each panel with a grid
  position and at least one query;
- every panel and query uses the provisioned Prometheus datasource (by uid);
- every metric a query names is declared in common/src/metrics.rs (histogram
  series may add _bucket, _sum or _count), or is Prometheus's own `up`.

    python3 deploy/check_dashboard.py

deploy/compose-test.py also checks the same names against a running cluster.
"""
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRAFANA = os.path.join(ROOT, "deploy", "grafana")
DASHBOARD = os.path.join(GRAFANA, "dashboards", "flotilla.json")
DATASOURCES = os.path.join(GRAFANA, "provisioning", "datasources", "prometheus.yml")
METRICS_RS = os.path.join(ROOT, "common", "src", "metrics.rs")

PROMQL_KEYWORDS = {"sum", "rate", "histogram_quantile", "max", "min", "avg", "count", "scalar",
                   "irate", "increase"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def query_metrics(expr):
    """Metric names in a PromQL expression (identifiers outside labels and ranges)."""
    stripped = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"|\b(by|without)\s*\([^)]*\)", "", expr)
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", stripped))
    return {n for n in names if n not in PROMQL_KEYWORDS and not n.startswith("__")}


def dashboard_metrics(path=DASHBOARD):
    with open(path) as f:
        dashboard = json.load(f)
    return {n for p in dashboard["panels"] for t in p["targets"] for n in query_metrics(t["expr"])}


def declared_metrics():
    with open(METRICS_RS) as f:
        return set(re.findall(r'"(flotilla_[a-z0-9_]+)"', f.read()))


def check():
    errors = []
    with open(DASHBOARD) as f:
        dashboard = json.load(f)
    with open(DATASOURCES) as f:
        uids = set(re.findall(r"^\s*uid:\s*(\S+)", f.read(), re.M))
    if not dashboard.get("uid") or not dashboard.get("title"):
        errors.append("dashboard needs a uid and a title")
    ids = [p.get("id") for p in dashboard["panels"]]
    if len(ids) != len(set(ids)) or None in ids:
        errors.append(f"panel ids must be present and unique: {ids}")
    declared = declared_metrics() | {"up"}
    for panel in dashboard["panels"]:
        title = panel.get("title", "?")
        if not {"x", "y", "w", "h"} <= set(panel.get("gridPos", {})):
            errors.append(f"panel {title!r}: gridPos needs x, y, w, h")
        if not panel.get("targets"):
            errors.append(f"panel {title!r}: no queries")
        for item in [panel] + panel.get("targets", []):
            uid = item.get("datasource", {}).get("uid")
            if uid not in uids:
                errors.append(f"panel {title!r}: datasource uid {uid!r} is not provisioned {sorted(uids)}")
        for target in panel.get("targets", []):
            for name in query_metrics(target.get("expr", "")):
                base = next((name[: -len(s)] for s in HISTOGRAM_SUFFIXES
                             if name.endswith(s) and name[: -len(s)] in declared), name)
                if base not in declared:
                    errors.append(f"panel {title!r}: metric {name!r} is not declared in common/src/metrics.rs")
    return errors


def main():
    errors = check()
    for e in errors:
        print(f"check_dashboard: {e}", file=sys.stderr)
    if errors:
        sys.exit(1)
    print(f"check_dashboard: {len(dashboard_metrics())} metrics in the dashboard, all declared")


if __name__ == "__main__":
    main()
