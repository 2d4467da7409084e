"""Three `civitas serve` nodes on one PostgreSQL database (the throwaway cluster the test command
starts), set up from Tests/Fixtures/clinic-exchange.json: concurrent aggregates from two partners,
spread over the nodes, spend two budgets worth exactly 100 charges between them; the log every node
serves is one chain that `civitas audit` and an independent reading (hashlib, PyNaCl) accept; a
signed request replayed to another node is refused."""

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
from test_server_live import signer_for

NODES = 3
CHARGE = 0.02  # ε per aggregate: each agreement's budget of 1 holds exactly 50
ATTEMPTS = 400


def fresh_database():
    server = os.environ.get("CIVITAS_TEST_POSTGRES_URL")
    if not server:
        pytest.fail("CIVITAS_TEST_POSTGRES_URL names no PostgreSQL server: run the tests with scripts/test, which starts one")
    name = "civitas_nodes_" + secrets.token_hex(6)
    subprocess.run(["psql", server, "-q", "-c", f"CREATE DATABASE {name}"], check=True, capture_output=True)
    return server.rsplit("/", 1)[0] + "/" + name


def start_nodes(civitas_bin, folder, database, processes):
    """Starts the nodes together (they migrate the database once between them); returns their URLs."""
    key = folder / "shared.storage-key"
    key.write_text("civitas-storage-key/1 " + base64.b64encode(os.urandom(32)).decode() + "\n")
    key.chmod(0o600)
    subprocess.run([civitas_bin, "keys", "generate", "--name", "broker", "--dir", "Keys"], cwd=folder, check=True, capture_output=True)
    for _ in range(NODES):
        processes.append(subprocess.Popen(
            [civitas_bin, "serve", "--postgres", database, "--storage-key", key, "--broker-key", "Keys/broker.secret",
             "--port", "0", "--operator", "Keys/operator.pub", "--postgres-connections", "8"],
            cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    urls = []
    for process in processes:
        deadline = time.time() + 60
        while time.time() < deadline:
            line = process.stdout.readline()
            if "listening on" in line:
                urls.append(line.split("listening on ")[1].split(" ")[0])
                break
            if not line and process.poll() is not None:
                raise AssertionError(f"a node stopped: {process.stderr.read()}")
        else:
            raise AssertionError("a node did not start")
    return urls


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
