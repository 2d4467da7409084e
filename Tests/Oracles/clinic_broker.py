"""The broker described by Tests/Fixtures/clinic-exchange.json, started as a real `civitas serve`
and set up through the signed CLI: the same participants, dataset, schema, base policy and
records rule the Swift broker tests use (Tests/CivitasBrokerTests/BrokerFixture.swift)."""

import json
import pathlib
import subprocess

from conftest import start_broker

FIXTURE = pathlib.Path(__file__).resolve().parents[1] / "Fixtures" / "clinic-exchange.json"


class ClinicBroker:
    def __init__(self, civitas_bin, folder, serve=None):
        """`serve(folder)` starts the broker once the keys exist and returns its process and URL
        (default: one `civitas serve` on SQLite in `folder`)."""
        self.scenario = json.loads(FIXTURE.read_text())
        self.binary, self.folder = civitas_bin, pathlib.Path(folder)
        self.dataset, self.purpose = self.scenario["dataset"], self.scenario["purpose"]
        self.url = None
        for name in ["operator"] + [p["name"] for p in self.scenario["participants"]]:
            self.civitas("keys", "generate", "--name", name)
        serve = serve or (lambda folder: start_broker(civitas_bin, folder, "Keys/operator.pub"))
        self.process, self.url = serve(self.folder)
        try:
            for participant in self.scenario["participants"]:
                self.civitas("participants", "add", "--key", "Keys/operator.secret", "--role", participant["role"],
                             f"Keys/{participant['name']}.pub")
            (self.folder / "schema.json").write_text(json.dumps(self.scenario["schema"]))
            purposes = [arg for purpose in self.scenario["policy"]["purposes"] for arg in ("--purpose", purpose)]
            self.civitas("datasets", "register", "--key", self.secret(self.scenario["publisher"]), "--id", self.dataset,
                         "--schema", "schema.json", *purposes)
        except BaseException:
            self.stop()
            raise

    def civitas(self, *args, check=True):
        env = {"PATH": "/usr/bin:/bin", **({"CIVITAS_BROKER": self.url} if self.url else {})}
        result = subprocess.run([self.binary, *map(str, args)], cwd=self.folder, capture_output=True, text=True, timeout=120, env=env)
        if check:
            assert result.returncode == 0, f"civitas {' '.join(map(str, args))}: {result.stderr}"
        return result

    @staticmethod
    def secret(name):
        return f"Keys/{name}.secret"

    def key_id(self, name):
        return self.civitas("keys", "show", "--id", f"Keys/{name}.pub").stdout.strip()

    @staticmethod
    def person(i):
        return f"P{10000 + i}"

    def records(self, people, visits_each=2, first=0):
        """Rows by the fixture file's rule (the rule BrokerFixture.records follows)."""
        rule = self.scenario["records"]
        diagnoses = rule["diagnoses"]
        rows = []
        for i in range(first, first + people):
            for n in range(visits_each):
                rows.append([self.person(i), f"r{i}-{n}", str(20 + (i * 7) % 60), f"1910{i % 10}", diagnoses[(i + n) % len(diagnoses)],
                             str((i + n) % 12), f"free text {i}"])
        return rule["columns"], rows

    def publish(self, people, visits_each=2, first=0, name="batch.csv"):
        columns, rows = self.records(people, visits_each, first)
        (self.folder / name).write_text("\n".join(",".join(row) for row in [columns] + rows) + "\n")
        return self.civitas("publish", "--key", self.secret(self.scenario["publisher"]), self.dataset, name).stdout

    def consent(self, people, granted=True, name="subjects.txt"):
        (self.folder / name).write_text("\n".join(self.person(i) for i in people) + "\n")
        return self.civitas("consent", "grant" if granted else "withdraw", "--key", self.secret(self.scenario["publisher"]),
                            "--dataset", self.dataset, "--subjects", name, "--purpose", self.purpose,
                            "--notice", "notice-v1", "--jurisdiction", "EU").stdout

    def policy(self, agreement, partner, **overrides):
        """The fixture file's policy for `partner`, with overrides (k and suppression_limit go to the
        treatment; a member overridden with None is left out)."""
        policy = json.loads(json.dumps(self.scenario["policy"]))
        policy.update(agreement=agreement, dataset=self.dataset, publisher=self.key_id(self.scenario["publisher"]),
                      partner=self.key_id(partner))
        for key in ("k", "suppression_limit"):
            if key in overrides:
                policy["treatment"][key] = overrides.pop(key)
        policy.update(overrides)
        return {key: value for key, value in policy.items() if value is not None}

    def agree(self, agreement, partner, **overrides):
        policy = self.policy(agreement, partner, **overrides)
        (self.folder / f"{agreement}.json").write_text(json.dumps(policy))
        self.civitas("agreements", "offer", "--key", self.secret(self.scenario["publisher"]), f"{agreement}.json")
        self.civitas("agreements", "accept", "--key", self.secret(partner), agreement)
        return policy

    def release(self, agreement, partner, out):
        """Requests a release and pulls it as CSV into `out`; returns the request's report."""
        requested = self.civitas("request", "release", "--key", self.secret(partner), "--purpose", self.purpose, agreement).stdout
        delivery = requested.split("delivery ")[1].split(":")[0]
        self.civitas("pull", "--key", self.secret(partner), "--issuer", "Keys/broker.pub", "--delivery", delivery, "--out", out)
        return requested

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=10)
