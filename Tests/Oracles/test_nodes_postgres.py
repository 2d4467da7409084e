"""Three `civitas serve` nodes on one PostgreSQL database (the throwaway cluster the test command
starts), set up from Tests/Fixtures/clinic-exchange.json: concurrent aggregates from two partners,
spread over the nodes, spend two budgets worth exactly 100 charges between them; the log every node
serves is one chain that `civitas audit` and an independent reading (hashlib) accept; a retry with
its idempotency key at another node answers the first delivery; a signed request replayed to
another node is refused; a feed window due by time, which every node's
schedule sees, closes exactly once; a node killed (SIGKILL) in the middle of releases
leaves no partial delivery, the others keep serving, and it rejoins when started again."""

import base64
import concurrent.futures
import json
import os
import secrets
import subprocess
import time

import pytest
import requests

import civitas_log
from clinic_broker import ClinicBroker
from conftest import ROOT, fresh_database
from test_server_live import signer_for

NODES = 3
CHARGE = 0.02  # ε per aggregate: each agreement's budget of 1 holds exactly 50
ATTEMPTS = 400


def launch_node(civitas_bin, folder, database, port=0):
    return subprocess.Popen(
        [civitas_bin, "serve", "--postgres", database, "--storage-key", folder / "shared.storage-key", "--broker-key", "Keys/broker.secret",
         "--port", str(port), "--operator", "Keys/operator.pub", "--postgres-connections", "8", "--schedule-interval", "1"],
        cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def listening_url(process):
    deadline = time.time() + 60
    while time.time() < deadline:
        line = process.stdout.readline()
        if "listening on" in line:
            return line.split("listening on ")[1].split(" ")[0]
        if not line and process.poll() is not None:
            raise AssertionError(f"a node stopped: {process.stderr.read()}")
    raise AssertionError("a node did not start")


def start_nodes(civitas_bin, folder, database, processes):
    """Starts the nodes together (they migrate the database once between them); returns their URLs."""
    key = folder / "shared.storage-key"
    key.write_text("civitas-storage-key/1 " + base64.b64encode(os.urandom(32)).decode() + "\n")
    key.chmod(0o600)
    subprocess.run([civitas_bin, "keys", "generate", "--name", "broker", "--dir", "Keys"], cwd=folder, check=True, capture_output=True)
    processes.extend(launch_node(civitas_bin, folder, database) for _ in range(NODES))
    return [listening_url(process) for process in processes]


@pytest.fixture(scope="module")
def nodes(civitas_bin, tmp_path_factory):
    folder = tmp_path_factory.mktemp("nodes")
    database = fresh_database()
    processes, urls = [], []

    def serve(folder):
        urls.extend(start_nodes(civitas_bin, folder, database, processes))
        return processes[0], urls[0]

    try:
        clinic = ClinicBroker(civitas_bin, folder, serve=serve)
        clinic.publish(120)
        clinic.consent(range(120))
        for partner in ("health", "university"):
            clinic.agree(f"ag-{partner}", partner)
        clinic.database, clinic.processes = database, processes
        yield clinic, urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=10)


def test_concurrent_aggregates_on_three_nodes_spend_the_budgets_exactly(nodes):
    clinic, urls = nodes

    def aggregate(attempt):
        partner = ("health", "university")[attempt % 2]
        result = clinic.civitas("request", "aggregate", "--key", clinic.secret(partner), "--purpose", clinic.purpose,
                                "--statistic", "count", "--group-by", "zip", "--epsilon", str(CHARGE),
                                "--broker", urls[attempt % NODES], f"ag-{partner}", check=False)
        return result.returncode, result.stderr.strip()

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = list(pool.map(aggregate, range(ATTEMPTS)))
    delivered = [reason for code, reason in outcomes if code == 0]
    refused = [reason for code, reason in outcomes if code != 0]
    other = [reason for reason in refused if not ("(409)" in reason and "left; this needs" in reason)]
    assert not other, other[:3]
    assert len(delivered) == 100 and len(refused) == ATTEMPTS - 100
    for partner in ("health", "university"):
        shown = json.loads(clinic.civitas("agreements", "show", "--key", clinic.secret(partner), "--broker", urls[2], f"ag-{partner}").stdout)
        assert shown["epsilon_spent"] == "1", shown

    # Every node serves the same log; it is one chain with a checkpoint over all of it.
    exports = []
    for index, url in enumerate(urls):
        path = clinic.folder / f"export-{index}.jsonl"
        clinic.civitas("log", "fetch", "--key", clinic.secret("auditor"), "--broker", url, path)
        audit = clinic.civitas("audit", "--broker", "Keys/broker.pub", path, check=False)
        assert audit.returncode == 0, audit.stdout + audit.stderr
        exports.append(civitas_log.read_export(path))
    header, entries, checkpoints = exports[-1]
    for index, entry in enumerate(entries):
        decoded = json.loads(entry)
        assert decoded["index"] == index
        if index:
            assert decoded["prev"] == civitas_log.leaf_hash(entries[index - 1]).hex()
    size, note = checkpoints[-1]
    delivered_entries = [json.loads(e) for e in entries if json.loads(e)["type"] == "release.delivered"
                         and json.loads(e).get("agreement") in ("ag-health", "ag-university")]
    assert len(delivered_entries) == 100
    assert size == len(entries)
    # Each node's export is the same log, to the size it was fetched at.
    for _, other_entries, _ in exports:
        assert other_entries == entries[:len(other_entries)]


def test_a_retry_with_its_key_at_another_node_answers_the_first_delivery(nodes):
    clinic, urls = nodes
    clinic.agree("ag-university-keyed", "university")

    def aggregate(url, *key):
        result = clinic.civitas("request", "aggregate", "--key", clinic.secret("university"), "--purpose", clinic.purpose,
                                "--statistic", "count", "--group-by", "zip", "--epsilon", "0.2", "--broker", url, *key, "ag-university-keyed")
        return result.stdout.split("delivery ")[1].split(":")[0], result.stderr

    first, told = aggregate(urls[0])
    key = told.split("request key ")[1].split(" ")[0]
    again, _ = aggregate(urls[2], "--idempotency-key", key)
    assert again == first
    shown = json.loads(clinic.civitas("agreements", "show", "--key", clinic.secret("university"), "--broker", urls[1],
                                      "ag-university-keyed").stdout)
    assert shown["epsilon_spent"] == "0.2", shown
    # The control: another key at another node is another aggregate, charged again.
    other, _ = aggregate(urls[1], "--idempotency-key", key + "-2")
    assert other != first


def test_a_request_replayed_to_another_node_is_refused(nodes):
    clinic, urls = nodes
    signer, key_id = signer_for(clinic.folder / "Keys" / "health.secret")
    first, second = urls[0], urls[1]
    # Behind one address (a load balancer), every node sees the same signed URL: the Host is the first node's.
    request = requests.Request("GET", first + "/participants").prepare()
    signer.sign(request, key_id=key_id, label="sig1", nonce=secrets.token_hex(12),
                covered_component_ids=("@method", "@target-uri", "content-digest"), body=b"")
    session = requests.Session()
    assert session.send(request).status_code == 200
    replay = request.copy()
    replay.url = second + "/participants"
    replay.headers["Host"] = first.split("://")[1]
    answer = session.send(replay)
    assert answer.status_code == 401, answer.text
    assert "nonce" in answer.text or "replay" in answer.text, answer.text
    # The control: a fresh nonce for the same request is accepted by the second node.
    fresh = requests.Request("GET", first + "/participants").prepare()
    signer.sign(fresh, key_id=key_id, label="sig1", nonce=secrets.token_hex(12),
                covered_component_ids=("@method", "@target-uri", "content-digest"), body=b"")
    fresh.url = second + "/participants"
    fresh.headers["Host"] = first.split("://")[1]
    assert session.send(fresh).status_code == 200


def psql(database, query):
    return subprocess.run(["psql", database, "-At", "-c", query], check=True, capture_output=True, text=True).stdout.strip()


def test_a_node_killed_in_the_middle_of_releases_leaves_no_partial_delivery(nodes, civitas_bin):
    clinic, urls = nodes
    # Enough records that a release takes a second or two: 100,000 people with two visits each.
    clinic.publish(100_000, first=1_000, name="large.csv")
    clinic.consent(range(1_000, 101_000), name="large-subjects.txt")
    for partner in ("health", "university"):
        clinic.agree(f"ag-{partner}-release", partner)
    victim = clinic.processes[0]
    requests_in_flight = [subprocess.Popen(
        [civitas_bin, "request", "release", "--key", clinic.secret(partner), "--purpose", clinic.purpose,
         "--broker", urls[0], f"ag-{partner}-release"], cwd=clinic.folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for partner in ("health", "university")]
    time.sleep(0.4)
    in_flight = sum(process.poll() is None for process in requests_in_flight)
    victim.kill()
    victim.wait(timeout=10)
    # The partners' clients would retry the dead node; they are stopped instead and ask another node below.
    for process in requests_in_flight:
        process.kill()
        process.wait(timeout=10)
    assert in_flight >= 1, [(p.returncode, p.stdout.read()[-300:], p.stderr.read()[-300:]) for p in requests_in_flight]

    # The other nodes keep serving, and answer for the partner what happened.
    listed = clinic.civitas("participants", "list", "--key", clinic.secret("health"), "--broker", urls[1])
    assert listed.returncode == 0
    # No delivery without its log entry, none half-written: every stored delivery is recorded in the log.
    assert psql(clinic.database, "SELECT count(*) FROM delivery d WHERE NOT EXISTS "
                                 "(SELECT 1 FROM log_entry e WHERE e.position = d.log_index)") == "0"
    assert psql(clinic.database, "SELECT size FROM log_head") == psql(clinic.database, "SELECT count(*) FROM log_entry")
    # A release the killed node did not commit is asked again of another node, and made once.
    for partner in ("health", "university"):
        again = clinic.civitas("request", "release", "--key", clinic.secret(partner), "--purpose", clinic.purpose,
                               "--broker", urls[2], f"ag-{partner}-release", check=False)
        assert again.returncode == 0 or "already been delivered" in again.stderr, again.stderr
        assert psql(clinic.database, f"SELECT count(*) FROM delivery WHERE agreement = 'ag-{partner}-release'") == "1"

    # The killed node starts again, checks the shared log, and serves the same log.
    restarted = launch_node(civitas_bin, clinic.folder, clinic.database)
    clinic.processes[0] = restarted
    url = listening_url(restarted)
    urls[0] = clinic.url = url
    path = clinic.folder / "export-after-restart.jsonl"
    clinic.civitas("log", "fetch", "--key", clinic.secret("auditor"), "--broker", url, path)
    audit = clinic.civitas("audit", "--broker", "Keys/broker.pub", path, check=False)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    _, entries, _ = civitas_log.read_export(path)
    assert len(entries) == int(psql(clinic.database, "SELECT size FROM log_head"))


def test_a_window_every_node_sees_due_closes_once(nodes):
    clinic, urls = nodes
    clinic.agree("ag-health-feed", "health", feed={"window_records": 1_000_000, "window_seconds": 2, "below_k": "suppress"})
    subscribed = clinic.civitas("request", "feed", "--key", clinic.secret("health"), "--purpose", clinic.purpose,
                                "--broker", urls[1], "ag-health-feed").stdout
    feed = subscribed.split("feed ")[1].strip()
    clinic.consent(range(200_000, 200_060), name="window-subjects.txt")
    clinic.publish(60, first=200_000, name="window.csv")
    # Every node's schedule (every second) sees the window due after two seconds; one delivers it.
    deadline = time.time() + 30
    while time.time() < deadline and psql(clinic.database, f"SELECT delivered FROM feed WHERE id = '{feed}'") == "0":
        time.sleep(0.2)
    time.sleep(3)  # three more rounds of every node's schedule
    assert psql(clinic.database, f"SELECT delivered FROM feed WHERE id = '{feed}'") == "1"
    assert psql(clinic.database, f"SELECT count(*) FROM delivery WHERE feed = '{feed}'") == "1"
    path = clinic.folder / "export-feed.jsonl"
    clinic.civitas("log", "fetch", "--key", clinic.secret("auditor"), "--broker", urls[2], path)
    _, entries, _ = civitas_log.read_export(path)
    windows = [json.loads(e) for e in entries if json.loads(e).get("agreement") == "ag-health-feed"
               and json.loads(e)["type"] == "release.delivered"]
    assert len(windows) == 1


def test_the_demo_runs_on_two_nodes_over_postgresql(civitas_bin, tmp_path):
    database = fresh_database()
    result = subprocess.run([civitas_bin, "demo", "--postgres", database, "--keep", tmp_path / "demo"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "node 1 listening on" in result.stdout and "node 2 on" in result.stdout
    assert "audit OK" in result.stdout
    # The same database does not take a second walkthrough: it already holds a log.
    again = subprocess.run([civitas_bin, "demo", "--postgres", database], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode != 0 and "already holds a log" in again.stderr
