"""The broker's /metrics, read by prometheus_client's own parser: every family carries its
`# HELP`, and the figures an operator alerts on agree with what the broker answers elsewhere —
deliveries by kind, refusals by code, the log's size and checkpoint (and its age), ε spent and
budgeted per agreement, and a feed's windows waiting for acknowledgement."""

import json
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from clinic_broker import ClinicBroker


@pytest.fixture(scope="module")
def clinic(civitas_bin, tmp_path_factory):
    broker = ClinicBroker(civitas_bin, tmp_path_factory.mktemp("metrics"))
    yield broker
    broker.stop()


def scrape(url):
    with urllib.request.urlopen(url + "/metrics", timeout=30) as answer:
        return {family.name: family for family in text_string_to_metric_families(answer.read().decode())}


def value(families, name, **labels):
    for family in families.values():
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


def test_metrics_report_what_an_operator_alerts_on(clinic):
    clinic.publish(30)
    clinic.consent(range(30))
    clinic.agree("ag-health", "health", k=3, feed={"window_records": 20, "window_seconds": 3600, "below_k": "suppress"})
    clinic.release("ag-health", "health", "released.csv")
    clinic.civitas("request", "aggregate", "--key", clinic.secret("health"), "--purpose", clinic.purpose,
                   "--statistic", "count", "--group-by", "zip", "--epsilon", "0.2", "ag-health")
    feed = clinic.civitas("request", "feed", "--key", clinic.secret("health"), "--purpose", clinic.purpose, "ag-health").stdout.split("feed ")[1].strip()
    # New records fill a window of 20 or more, which waits for the partner's acknowledgement.
    clinic.consent(range(30, 50))
    clinic.publish(20, first=30, name="more.csv")
    # A refusal: a request without a signature.
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(clinic.url + "/participants", timeout=30)
    assert refused.value.code == 401
    code = json.loads(refused.value.read())["error"]["code"]

    families = scrape(clinic.url)
    undocumented = [name for name, family in families.items() if name.startswith("civitas") and not family.documentation]
    assert undocumented == []

    assert value(families, "civitas_deliveries_total", kind="release") == 1
    assert value(families, "civitas_deliveries_total", kind="aggregate") == 1
    windows = value(families, "civitas_deliveries_total", kind="window")
    assert windows >= 1
    assert value(families, "civitas_feed_backlog_windows", feed=feed) == windows
    assert value(families, "civitas_refusals_total", code=code) >= 1

    with urllib.request.urlopen(clinic.url + "/log/checkpoint", timeout=30) as answer:
        checkpoint_size = int(answer.read().decode().split("\n")[1])
    families = scrape(clinic.url)
    assert value(families, "civitas_log_checkpoint_entries") == checkpoint_size
    assert value(families, "civitas_log_entries") >= checkpoint_size
    assert 0 <= value(families, "civitas_log_checkpoint_age_seconds") < 60

    shown = json.loads(clinic.civitas("agreements", "show", "--key", clinic.secret("health"), "ag-health").stdout)
    assert value(families, "civitas_epsilon_spent_ratio", agreement="ag-health") == pytest.approx(float(shown["epsilon_spent"]))
    assert value(families, "civitas_epsilon_budget_ratio", agreement="ag-health") == pytest.approx(float(shown["epsilon_budget"]))
    # An agreement that counts ρ (zCDP) is watched as ρ, never as ε.
    clinic.agree("ag-health-rho", "health", epsilon_budget=None, rho_budget=2, aggregates=None)
    families = scrape(clinic.url)
    assert value(families, "civitas_rho_budget_ratio", agreement="ag-health-rho") == 2
    assert value(families, "civitas_rho_spent_ratio", agreement="ag-health-rho") == 0
    assert not [s for f in families.values() for s in f.samples if s.name.startswith("civitas_epsilon") and s.labels.get("agreement") == "ag-health-rho"]
    assert value(families, "civitas_http_requests_total", route="/participants", status="401") >= 1

    # The partner pulls and acknowledges the windows: the backlog falls to 0.
    clinic.civitas("pull", "--key", clinic.secret("health"), "--issuer", "Keys/broker.pub", "--feed", feed, "--ack", "--out", "windows.csv")
    assert value(scrape(clinic.url), "civitas_feed_backlog_windows", feed=feed) == 0


def test_the_help_check_can_fail():
    bare = {family.name: family for family in text_string_to_metric_families("# TYPE civitas_bare_total counter\ncivitas_bare_total 1\n")}
    assert [name for name, family in bare.items() if not family.documentation] == ["civitas_bare"]
