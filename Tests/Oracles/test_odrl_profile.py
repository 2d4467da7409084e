"""An agreement exported as ODRL (GET /agreements/{id}/odrl), read by tools we did not write:
PyLD expands it with the W3C ODRL context (from Tests/Fixtures, no network) and the profile's
context the broker serves; from the expanded graph alone, an independent reading of
docs/odrl-profile.md rebuilds the policy document, whose RFC 8785 SHA-256 (rfc8785 package)
equals the agreement's; every term outside ODRL's core is declared in the profile
(docs/odrl-profile.ttl, actions with odrl:includedIn); and pyshacl, with the ODRL working
group's shapes and the ODRL vocabulary, finds nothing in the agreement and its profile that the
vocabulary itself does not already show. Positive controls: a changed k rebuilds a policy with
another hash; a profile action without includedIn, or two conflict strategies, are found."""

import copy
import hashlib
import json
import pathlib
import urllib.request

import pytest
import rfc8785
from pyld import jsonld
from pyshacl import validate
from rdflib import Graph, Literal, URIRef

from clinic_broker import ClinicBroker

ROOT = pathlib.Path(__file__).resolve().parents[2]
ODRL = ROOT / "Tests" / "Fixtures" / "odrl-2.2"
O = "http://www.w3.org/ns/odrl/2/"
C = "https://civitas.example/ns/odrl#"
GDPR = "https://w3id.org/dpv/legal/eu/gdpr#"
BASES = {"a": "consent", "b": "contract", "c": "legal-obligation", "d": "vital-interests", "e": "public-task", "f": "legitimate-interests"}


@pytest.fixture(scope="module")
def clinic(civitas_bin, tmp_path_factory):
    broker = ClinicBroker(civitas_bin, tmp_path_factory.mktemp("odrl"))
    yield broker
    broker.stop()


def loader(profile_context):
    def load(url, options=None):
        if url == "http://www.w3.org/ns/odrl.jsonld":
            document = json.loads((ODRL / "odrl-context.jsonld").read_text())
        else:
            raise jsonld.JsonLdError(f"no network in tests: {url}", "loading document failed")
        return {"contentType": "application/ld+json", "contextUrl": None, "documentUrl": url, "document": document}
    return load


AGREEMENTS = {
    "ag-odrl": dict(k=3, legal_basis="public-task", epsilon_budget=2.5,
                    aggregates={"group_by": ["zip"], "group_keys": {"zip": [f"1910{i}" for i in range(10)]}, "max_epsilon_per_query": 0.25},
                    feed={"window_records": 50, "window_seconds": 600, "below_k": "suppress"}),
    # Synthetic releases under a zCDP budget: the tree, a list of lists, travels as a JSON literal.
    "ag-odrl-synthetic": dict(epsilon_budget=None, rho_budget=2, aggregates=None,
                              synthetic={"fields": ["age", "zip", "diagnosis"], "bins": {"age": [0, 40, 121]},
                                         "domains": {"zip": [f"1910{i}" for i in range(10)], "diagnosis": ["flu", "asthma"]},
                                         "tree": [["age", "zip"], ["age", "diagnosis"]], "max_rho_per_release": 0.5}),
}


@pytest.fixture(scope="module", params=sorted(AGREEMENTS))
def exported(clinic, request):
    clinic.agree(request.param, "health", **AGREEMENTS[request.param])
    shown = json.loads(clinic.civitas("agreements", "show", "--key", clinic.secret("health"), request.param).stdout)
    odrl = json.loads(clinic.civitas("agreements", "show", "--key", clinic.secret("health"), "--odrl", request.param).stdout)
    with urllib.request.urlopen(clinic.url + "/odrl/profile.jsonld", timeout=30) as answer:
        profile_context = json.loads(answer.read())
    expanded = jsonld.expand(odrl, {"documentLoader": loader(profile_context)})
    return shown, odrl, expanded


def one(node, key):
    values = node.get(key, [])
    assert len(values) == 1, (key, values)
    return values[0]


def scalar(value):
    if "@list" in value:
        return [scalar(item) for item in value["@list"]]
    if value.get("@type") == "@json":
        return value["@value"]
    if "@id" in value:
        return value["@id"]
    return value["@value"]


def rebuild(expanded):
    """The policy document, from the expanded agreement alone (docs/odrl-profile.md's mapping)."""
    [agreement] = expanded
    assert agreement["@type"] == [O + "Agreement"]
    assert scalar(one(agreement, O + "profile")) == "https://civitas.example/ns/odrl-profile/1"
    strip = lambda iri, prefix: iri[len(prefix):] if iri.startswith(prefix) else pytest.fail(f"{iri} is not {prefix}…")
    document = {"agreement": strip(agreement["@id"], "urn:civitas:agreement:"),
                "dataset": strip(scalar(one(agreement, O + "target")), "urn:civitas:dataset:"),
                "publisher": strip(scalar(one(agreement, O + "assigner")), "urn:civitas:participant:"),
                "partner": strip(scalar(one(agreement, O + "assignee")), "urn:civitas:participant:"),
                "legal_basis": BASES[strip(scalar(one(agreement, "https://w3id.org/dpv#hasLegalBasis")), GDPR + "A6-1-")]}
    if C + "register" in agreement:
        document["register"] = scalar(one(agreement, C + "register"))
    treatment = {}
    names = {"k": "k", "l": "l", "suppressionLimit": "suppression_limit", "algorithm": "algorithm", "pseudonymEpoch": "pseudonym_epoch",
             "linkage": "linkage", "epsilon": "epsilon", "fractionDigits": "fraction_digits", "groupBy": "group_by", "groupKeys": "group_keys",
             "epsilonPerQuery": "max_epsilon_per_query", "rowsPerSubject": "max_rows_per_subject", "groupsPerSubject": "max_groups_per_subject",
             "windowRecords": "window_records", "windowSeconds": "window_seconds", "belowK": "below_k",
             "rho": "rho", "syntheticField": "fields", "domains": "domains", "bins": "bins", "tree": "tree",
             "rhoPerRelease": "max_rho_per_release"}

    def members(rule):
        out = {}
        for constraint in rule.get(O + "constraint", []):
            operand = scalar(one(constraint, O + "leftOperand"))
            out[names[strip(operand, C)]] = scalar(one(constraint, O + "rightOperand"))
        return out

    for permission in agreement[O + "permission"]:
        action = scalar(one(permission, O + "action"))
        if action == O + "use":
            for constraint in permission[O + "constraint"]:
                operand, operator = scalar(one(constraint, O + "leftOperand")), scalar(one(constraint, O + "operator"))
                value = scalar(one(constraint, O + "rightOperand"))
                if operand == O + "purpose":
                    document["purposes"] = [strip(p, "urn:civitas:purpose:") for p in value]
                elif operand == O + "dateTime":
                    document["valid_from" if operator == O + "gteq" else "valid_until"] = value
                elif operand == C + "field":
                    document["fields"] = value
                elif operand == C + "recordsPerSubject":
                    treatment["max_records_per_subject"] = value
                else:
                    pytest.fail(f"unknown constraint {operand}")
            for duty in permission[O + "duty"]:
                kind = scalar(one(duty, O + "action"))
                if kind in (O + "anonymize", C + "pseudonymize"):
                    treatment.update(members(duty))
                elif kind == C + "addNoise":
                    treatment["measure_noise"] = members(duty)
                elif kind == C + "chargePrivacyBudget":
                    for unit, value in members(duty).items():
                        document[unit + "_budget"] = value
        elif action == C + "aggregate":
            document["aggregates"] = members(permission)
        elif action == C + "subscribe":
            document["feed"] = members(permission)
        elif action == C + "synthesize":
            document["synthetic"] = members(permission)
    document["treatment"] = treatment
    return document


def test_the_policy_rebuilt_from_the_expanded_odrl_hashes_the_same(exported):
    shown, _, expanded = exported
    rebuilt = rebuild(expanded)
    assert hashlib.sha256(rfc8785.dumps(rebuilt)).hexdigest() == shown["policy_sha256"]
    assert rebuilt == shown["policy"]
    # Positive control: the same reading of an agreement with another k gives another hash.
    changed = copy.deepcopy(expanded)
    for permission in changed[0][O + "permission"]:
        for duty in permission.get(O + "duty", []):
            for constraint in duty.get(O + "constraint", []):
                if constraint[O + "leftOperand"][0]["@id"] == C + "k":
                    constraint[O + "rightOperand"] = [{"@value": 4}]
    assert hashlib.sha256(rfc8785.dumps(rebuild(changed))).hexdigest() != shown["policy_sha256"]


def test_every_term_outside_odrl_core_is_declared_in_the_profile(exported):
    _, _, expanded = exported
    profile = Graph().parse(ROOT / "docs" / "odrl-profile.ttl", format="turtle")
    used = set()

    def walk(value):
        if isinstance(value, dict):
            for key, item in value.items():
                if key.startswith(C):
                    used.add(key)
                if key in (O + "action", O + "leftOperand"):
                    used.update(v["@id"] for v in item if v["@id"].startswith(C))
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
    walk(expanded)
    assert used, "the agreement uses profile terms"
    undeclared = [term for term in used if (URIRef(term), None, None) not in profile]
    assert undeclared == []
    actions = [term for term in used if (URIRef(term), URIRef("http://www.w3.org/1999/02/22-rdf-syntax-ns#type"), URIRef(O + "Action")) in profile]
    assert actions and all((URIRef(a), URIRef(O + "includedIn"), None) in profile for a in actions)


def shape_results(graph, shapes):
    _, report, _ = validate(graph, shacl_graph=shapes, inference="rdfs", advanced=True)
    sh = "http://www.w3.org/ns/shacl#"
    return {(str(report.value(r, URIRef(sh + "focusNode"))), str(report.value(r, URIRef(sh + "resultPath"))), str(report.value(r, URIRef(sh + "sourceConstraintComponent"))))
            for r in report.subjects(URIRef("http://www.w3.org/1999/02/22-rdf-syntax-ns#type"), URIRef(sh + "ValidationResult"))}


def test_the_agreement_adds_no_violation_of_the_odrl_shapes(exported):
    """The working group's shapes, with the ODRL vocabulary (its class hierarchy) and the profile
    in the graph. Their ActionShape asks every Action for odrl:includedIn, which 23 of the
    vocabulary's own actions (odrl:use, the most general, among them) lack: the vocabulary alone
    is the baseline, and the agreement and its profile must add no result to it."""
    _, _, expanded = exported
    data = Graph().parse(data=json.dumps(expanded), format="json-ld")
    shapes = Graph()
    shapes.parse(data="@prefix rdf: <http://www.w3.org/1999/02/22-rdf-syntax-ns#> .\n" + (ODRL / "shapes.ttl").read_text(), format="turtle")
    shapes.parse(ODRL / "shapesv2.ttl", format="turtle")
    vocabulary = Graph().parse(ODRL / "ODRL22.ttl", format="turtle")
    profile = Graph().parse(ROOT / "docs" / "odrl-profile.ttl", format="turtle")
    baseline = shape_results(vocabulary, shapes)
    assert baseline, "the baseline is the vocabulary's own results"
    assert shape_results(data + vocabulary + profile, shapes) - baseline == set()
    # Positive controls: a profile action without includedIn, and two conflict strategies on one policy.
    bare = Graph()
    for triple in profile:
        if not (triple[0] == URIRef(C + "pseudonymize") and triple[1] == URIRef(O + "includedIn")):
            bare.add(triple)
    assert shape_results(data + vocabulary + bare, shapes) - baseline != set()
    agreement = next(data.subjects(URIRef("http://www.w3.org/1999/02/22-rdf-syntax-ns#type"), URIRef(O + "Agreement")))
    conflicted = data + Graph()
    conflicted.add((agreement, URIRef(O + "conflict"), URIRef(O + "perm")))
    conflicted.add((agreement, URIRef(O + "conflict"), URIRef(O + "prohibit")))
    assert shape_results(conflicted + vocabulary + profile, shapes) - baseline != set()
