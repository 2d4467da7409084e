"""The broker's /catalog, as JSON-LD and as Turtle, read by rdflib and checked by pyshacl against
the official DCAT-AP 3.0.1 shapes (Tests/Fixtures/dcat-ap-3.0.1-shacl, as published): no violation of
the mandatory shapes (shapes.ttl and range.ttl, with the date check SOURCE.txt describes put back
as the `sh:node` it was meant to be), and no warning of the recommended shapes but those about
data the broker is not given (a place's bounding box or centroid, a licence's type). Positive controls: the same graph with a dataset's description or a typed date taken away
fails. Registration refuses a schema a catalog could not publish."""

import json
import pathlib
import urllib.request

import pytest
from pyshacl import validate
from rdflib import Graph, Literal, URIRef
from rdflib.namespace import DCAT, DCTERMS, RDF, XSD

from conftest import start_broker

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHAPES = ROOT / "Tests" / "Fixtures" / "dcat-ap-3.0.1-shacl"
PUBLIC_URL = "https://broker.city.example"

DESCRIPTION = {
    "keywords": ["911", "emergency", "dispatch"],
    "themes": ["JUST", "HEAL"],
    "license": "http://publications.europa.eu/resource/authority/licence/ODC_BY",
    "contact": {"name": "Emergency services open data", "email": "opendata@city.example"},
    "spatial": ["https://places.city.example/montgomery-county"],
    "temporal": {"start": "2015-12-10", "end": "2016-12-31"},
    "publisher_type": "LocalAuthority",
    "accrual_periodicity": "DAILY",
    "record_time": "timeStamp",
}
CATALOG = {
    "title": "City data space", "description": "Datasets the city's agencies share with partners under agreements.",
    "homepage": "https://data.city.example/", "license": "http://publications.europa.eu/resource/authority/licence/CC0",
    "spatial": ["https://places.city.example/city"], "contact": {"name": "Data office", "email": "data@city.example"},
    "publisher_type": "LocalAuthority",
}
# Recommended properties the broker cannot fill without inventing data: a place's geometry and
# a licence's type.
NOT_GIVEN = {("Location", "bbox"), ("Location", "centroid"), ("LicenseDocument", "type")}


def signed_cli(civitas_bin, folder, url):
    def civitas(*args, check=True):
        import subprocess
        result = subprocess.run([civitas_bin, *map(str, args)], cwd=folder, capture_output=True, text=True, timeout=60,
                                env={"PATH": "/usr/bin:/bin", **({"CIVITAS_BROKER": url} if url else {})})
        assert not check or result.returncode == 0, result.stderr
        return result
    return civitas


@pytest.fixture(scope="module")
def broker(civitas_bin, tmp_path_factory):
    """A broker set up over its own address, then serving its catalog under its public URL. (Once
    started with --public-url, it checks signatures against that URL, which the CLI here, calling
    the loopback address, cannot reach: the setup runs before.)"""
    folder = tmp_path_factory.mktemp("catalog")
    civitas = signed_cli(civitas_bin, folder, None)
    for name in ("operator", "agency"):
        civitas("keys", "generate", "--name", name, "--dir", "K")
    (folder / "catalog.json").write_text(json.dumps(CATALOG))
    process, url = start_broker(civitas_bin, folder, "K/operator.pub")
    try:
        civitas = signed_cli(civitas_bin, folder, url)
        civitas("participants", "add", "--key", "K/operator.secret", "--role", "agency", "K/agency.pub")
        schema = json.loads((ROOT / "Schemas" / "datasets" / "emergency-call.schema.json").read_text())
        schema["x-dcat"] = DESCRIPTION
        (folder / "calls.schema.json").write_text(json.dumps(schema))
        civitas("datasets", "register", "--key", "K/agency.secret", "--id", "calls", "--schema", "calls.schema.json",
                "--purpose", "research", "--purpose", "transport-planning")
        # Calls with caller numbers, then a batch refused for one bad row (all its rows count as submitted).
        civitas("demo-data", "--calls", "3000", "--later", "0", "--dir", ".")
        civitas("publish", "--key", "K/agency.secret", "calls", "calls.csv")
        lines = (folder / "calls.csv").read_text().splitlines()
        refused = lines[:40] + ["not-a-number" + lines[40][lines[40].index(","):]]  # a latitude that is no number
        (folder / "refused.csv").write_text("\n".join(refused) + "\n")
        assert civitas("publish", "--key", "K/agency.secret", "calls", "refused.csv", check=False).returncode != 0
        plain = json.loads((ROOT / "Schemas" / "datasets" / "traffic-flow-observed.schema.json").read_text())
        (folder / "traffic.schema.json").write_text(json.dumps(plain))
        civitas("datasets", "register", "--key", "K/agency.secret", "--id", "traffic", "--schema", "traffic.schema.json")
    finally:
        process.terminate()
        process.wait(timeout=10)
    process, url = start_broker(civitas_bin, folder, "K/operator.pub", "--catalog", "catalog.json", "--public-url", PUBLIC_URL)
    try:
        yield type("Broker", (), {"url": url, "folder": folder})
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def registering(civitas_bin, tmp_path_factory):
    """A broker an agency registers datasets at, over the address it is called at."""
    folder = tmp_path_factory.mktemp("registering")
    civitas = signed_cli(civitas_bin, folder, None)
    for name in ("operator", "agency"):
        civitas("keys", "generate", "--name", name, "--dir", "K")
    process, url = start_broker(civitas_bin, folder, "K/operator.pub")
    try:
        civitas = signed_cli(civitas_bin, folder, url)
        civitas("participants", "add", "--key", "K/operator.secret", "--role", "agency", "K/agency.pub")
        yield type("Broker", (), {"url": url, "folder": folder, "civitas": staticmethod(civitas)})
    finally:
        process.terminate()
        process.wait(timeout=10)


def fetch(url, accept):
    request = urllib.request.Request(url + "/catalog", headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return answer.headers.get("Content-Type"), answer.read().decode()


def shapes(*names, node_fix=False):
    graph = Graph()
    for name in names:
        text = (SHAPES / name).read_text()
        if node_fix:
            text = text.replace("sh:shape :DateOrDateTimeDataType_Shape", "sh:node :DateOrDateTimeDataType_Shape")
        graph.parse(data=text, format="turtle")
    return graph


def results(data, shape_graph):
    conforms, report, _ = validate(data, shacl_graph=shape_graph, inference="none", advanced=True, allow_warnings=True)
    found = []
    for result in report.subjects(RDF.type, URIRef("http://www.w3.org/ns/shacl#ValidationResult")):
        sh = "http://www.w3.org/ns/shacl#"
        path = report.value(result, URIRef(sh + "resultPath"))
        focus = report.value(result, URIRef(sh + "focusNode"))
        severity = report.value(result, URIRef(sh + "resultSeverity"))
        found.append((str(severity).rsplit("#", 1)[-1], str(focus), str(path), str(report.value(result, URIRef(sh + "resultMessage")))))
    return found


@pytest.fixture(scope="module")
def graphs(broker):
    kind, jsonld = fetch(broker.url, "application/ld+json")
    assert kind == "application/ld+json"
    kind, turtle = fetch(broker.url, "text/turtle")
    assert kind.startswith("text/turtle")
    return Graph().parse(data=jsonld, format="json-ld"), Graph().parse(data=turtle, format="turtle")


def test_json_ld_and_turtle_are_the_same_graph(graphs):
    from rdflib.compare import isomorphic
    as_jsonld, as_turtle = graphs
    assert len(as_jsonld) > 100 and isomorphic(as_jsonld, as_turtle)


def test_no_violation_of_the_mandatory_shapes(graphs):
    mandatory = shapes("shapes.ttl", "range.ttl", node_fix=True)
    for graph in graphs:
        violations = [r for r in results(graph, mandatory) if r[0] == "Violation"]
        assert violations == []


def test_the_checker_sees_a_missing_description_and_an_untyped_date(graphs):
    mandatory = shapes("shapes.ttl", "range.ttl", node_fix=True)
    graph = Graph()
    for triple in graphs[0]:
        graph.add(triple)
    dataset = URIRef(PUBLIC_URL + "/datasets/calls")
    graph.remove((dataset, DCTERMS.description, None))
    issued = graph.value(dataset, DCTERMS.issued)
    graph.set((dataset, DCTERMS.issued, Literal(str(issued))))
    found = [(r[1], r[2]) for r in results(graph, mandatory) if r[0] == "Violation"]
    assert (str(dataset), str(DCTERMS.description)) in found
    assert (str(dataset), str(DCTERMS.issued)) in found


def test_recommended_shapes_warn_only_about_data_the_broker_is_not_given(graphs):
    recommended = shapes("shapes_recommended.ttl")
    graph = graphs[0]
    unexpected = []
    for severity, focus, path, message in results(graph, recommended):
        classes = {str(c).rsplit("/", 1)[-1].rsplit("#", 1)[-1] for c in graph.objects(URIRef(focus), RDF.type)}
        prop = path.rsplit("/", 1)[-1].rsplit("#", 1)[-1]
        if not any((c, prop) in NOT_GIVEN for c in classes):
            unexpected.append((focus, path, message))
    # The dataset registered without x-dcat is still published, with only what its schema says:
    # its warnings name what its publisher did not give.
    plain = PUBLIC_URL + "/datasets/traffic"
    missing_from_plain = {p for f, p, _ in unexpected if f.startswith(plain)}
    unexpected = [u for u in unexpected if not u[0].startswith(plain)]
    assert unexpected == []
    assert missing_from_plain == {str(DCAT.contactPoint), str(DCAT.keyword), str(DCAT.theme), str(DCTERMS.spatial), str(DCTERMS.temporal),
                                  str(DCTERMS.license)}


def test_the_catalog_names_the_api_and_each_dataset_offer(graphs):
    graph = graphs[0]
    catalog = URIRef(PUBLIC_URL + "/catalog")
    service = graph.value(catalog, DCAT.service)
    assert (service, RDF.type, DCAT.DataService) in graph
    assert graph.value(service, DCAT.endpointDescription) == URIRef(PUBLIC_URL + "/openapi.json")
    odrl = "http://www.w3.org/ns/odrl/2/"
    for dataset in graph.objects(catalog, DCAT.dataset):
        assert (service, DCAT.servesDataset, dataset) in graph
        offer = graph.value(dataset, URIRef(odrl + "hasPolicy"))
        assert (offer, RDF.type, URIRef(odrl + "Offer")) in graph
        assert graph.value(offer, URIRef(odrl + "target")) == dataset
    calls = URIRef(PUBLIC_URL + "/datasets/calls")
    checksum = graph.value(graph.value(calls, DCTERMS.conformsTo), URIRef("http://spdx.org/rdf/terms#checksum"))
    assert graph.value(checksum, URIRef("http://spdx.org/rdf/terms#checksumValue")).datatype == XSD.hexBinary


@pytest.mark.parametrize("change, reason", [
    (lambda s: s.pop("description"), "needs a description"),
    (lambda s: s.update({"x-dcat": {"themes": ["WEATHER"]}}), "not an EU data theme"),
    (lambda s: s.update({"x-dcat": {"license": "CC-BY"}}), "http(s) IRI"),
    (lambda s: s.update({"x-dcat": {"contact": {"name": "no address"}}}), "needs an email"),
    (lambda s: s.update({"x-dcat": {"temporal": {"start": "2016-02-30"}}}), "must be a date"),
    (lambda s: s.update({"x-dcat": {"colour": "blue"}}), "not a catalog field"),
])
def test_registration_refuses_what_a_catalog_could_not_publish(registering, change, reason):
    schema = json.loads((ROOT / "Schemas" / "datasets" / "alert.schema.json").read_text())
    change(schema)
    (registering.folder / "refused.schema.json").write_text(json.dumps(schema))
    result = registering.civitas("datasets", "register", "--key", "K/agency.secret", "--id", "refused", "--schema", "refused.schema.json", check=False)
    assert result.returncode != 0 and reason in result.stderr, result.stderr


DQV = "http://www.w3.org/ns/dqv#"


def measurements(graph, dataset):
    """Each DQV measurement of `dataset`: (metric name, what it was computed on, its value)."""
    found = {}
    for measurement in graph.objects(dataset, URIRef(DQV + "hasQualityMeasurement")):
        assert (measurement, RDF.type, URIRef(DQV + "QualityMeasurement")) in graph
        metric = graph.value(measurement, URIRef(DQV + "isMeasurementOf"))
        assert (metric, RDF.type, URIRef(DQV + "Metric")) in graph
        dimension = graph.value(metric, URIRef(DQV + "inDimension"))
        assert (dimension, RDF.type, URIRef(DQV + "Dimension")) in graph
        target = graph.value(measurement, URIRef(DQV + "computedOn"))
        label = graph.value(target, URIRef("http://www.w3.org/2000/01/rdf-schema#label"))
        found[(str(metric).rsplit("#metric-", 1)[1], str(label) if label is not None else None)] = graph.value(measurement, URIRef(DQV + "value"))
    return found


def test_quality_measurements_equal_a_pandas_recomputation_of_the_uploaded_file(broker, graphs):
    import pandas as pd
    calls = pd.read_csv(broker.folder / "calls.csv", dtype=str, keep_default_na=False)
    refused_rows = len((broker.folder / "refused.csv").read_text().splitlines()) - 1
    for graph in graphs:
        found = measurements(graph, URIRef(PUBLIC_URL + "/datasets/calls"))
        schema = json.loads((broker.folder / "calls.schema.json").read_text())
        # Completeness: the share of non-empty values of every field of the schema, to two decimals.
        for field in schema["properties"]:
            share = (calls[field] != "").mean() if field in calls else 0.0
            assert float(found[("completeness", field)].toPython()) == pytest.approx(round(share, 2), abs=1e-9), field
        assert float(found[("validity", None)].toPython()) == pytest.approx(round(len(calls) / (len(calls) + refused_rows), 2), abs=1e-9)
        assert float(found[("subject-uniqueness", None)].toPython()) == pytest.approx(round(calls["caller"].nunique() / len(calls), 2), abs=1e-9)
        latest = pd.to_datetime(calls["timeStamp"]).max()
        assert found[("latest-record", None)].toPython().replace(tzinfo=None) == latest.to_pydatetime()
        # One batch, just received, against a daily accrual periodicity.
        assert found[("batches-in-last-period", None)].toPython() == 1
        assert found[("on-schedule", None)].toPython() is True
        assert found[("latest-batch-age-hours", None)].toPython() == 0
        assert ("latest-record-age-hours", None) in found
        # Positive control: a recomputation from other records (the refused rows counted as accepted) disagrees.
        assert float(found[("validity", None)].toPython()) != pytest.approx(1.0)


def test_small_datasets_publish_no_quality_ratios(graphs):
    # The traffic dataset has no records: nothing is published of it (ratios appear from 100 records).
    assert measurements(graphs[0], URIRef(PUBLIC_URL + "/datasets/traffic")) == {}
