"""The demo: a partner's API key rotated through a real, key-enforcing gateway on the local AWS.

The secret has a grace period (GracePeriod=10s, OldKeyAction=delete): after the rotation both keys
are let in; once the grace has ended, one delivery of the retirement sweep
({"Action": "retire-expired-keys"}, what a recurring EventBridge rule sends every few minutes)
deletes the old key, and the gateway refuses it.

Run by `make demo` (scripts/demo.sh starts the local AWS and the function first).
"""

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

from rotate import clients, invoke_event, rotate
from seed import create_plan, create_stage


def mask(value):
    return "****" + value[-4:] if value else "-"


def call(endpoint, api, key):
    req = urllib.request.Request(f"{endpoint}/_aws/execute-api/{api}/prod/", headers={"x-api-key": key})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def emf_documents(path):
    """The EMF documents (metrics) the function wrote to its log, in order."""
    docs = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                i = line.find("{")
                if i < 0 or '"_aws"' not in line:
                    continue
                try:
                    doc = json.loads(line[i:])
                except ValueError:
                    continue
                if isinstance(doc, dict) and "_aws" in doc:
                    docs.append(doc)
    except OSError:
        pass
    return docs


def metrics_table(docs):
    """One row per invocation: the step metrics, the effects, and the retirements by action."""
    rows = [("step", "ms", "ok", "failed", "created", "retired", "throttled", "completed")]
    by_request = {}
    for d in docs:
        by_request.setdefault(d.get("RequestId", ""), []).append(d)
    for group in by_request.values():
        main = next((d for d in group if "Action" not in d and "ErrorType" not in d), None)
        if main is None:
            continue
        actions = [f"{d['KeysRetired']} {d['Action']}" for d in group if "Action" in d]
        errors = [d["ErrorType"] for d in group if "ErrorType" in d]
        rows.append((
            main.get("Step", "?"),
            f"{main.get('StepDuration', 0):.0f}",
            str(main.get("StepSucceeded", 0)),
            str(main.get("StepFailed", 0)) + (f" ({', '.join(errors)})" if errors else ""),
            str(main.get("KeysCreated", 0)),
            str(main.get("KeysRetired", 0)) + (f" ({', '.join(actions)})" if actions else ""),
            str(main.get("ThrottledCalls", 0)),
            str(main.get("RotationCompleted", 0)),
        ))
    return rows


# The demo secret's grace period: long enough to call both keys after the rotation, short enough
# to wait out.
GRACE = "10s"
SCHEDULE_TAG = "api-key-rotator:retire:"


def retirement_due(sm, secret, key_id):
    """The due time (seconds since the epoch) of `key_id`'s scheduled retirement, from the
    secret's schedule tag (`due:<34 binary digits>:<RFC 3339>`), or None."""
    tags = {t["Key"]: t["Value"] for t in sm.describe_secret(SecretId=secret).get("Tags", [])}
    value = tags.get(SCHEDULE_TAG + key_id, "")
    parts = value.split(":")
    if len(parts) < 2 or parts[0] != "due" or not parts[1] or set(parts[1]) - {"0", "1"}:
        return None
    return int(parts[1], 2)


def step(n, text):
    print(f"[{n}] {text}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--invoke-port", type=int, required=True)
    ap.add_argument("--cargo-lambda", default="cargo-lambda")
    ap.add_argument("--function-log", help="the function's output, for the metrics it emitted")
    ap.add_argument("--operator", help="the api-key-rotator binary, run as the operator command line")
    a = ap.parse_args()
    sm, _, ag = clients(a.endpoint)
    suffix = str(int(time.time()))

    step(1, "creating a REST API: GET / needs an API key (MOCK integration), stage prod")
    api = create_stage(ag, f"partner-api-{suffix}")

    step(2, "creating a usage plan (5 rps, burst 10, 1000 a day) and the partner's first key")
    plan = create_plan(ag, f"partner-plan-{suffix}", api)
    first = ag.create_api_key(name=f"partner-a-first-{suffix}", enabled=True, description="Partner A",
                              customerId="partner-a")
    ag.create_usage_plan_key(usagePlanId=plan, keyId=first["id"], keyType="API_KEY")

    step(3, f"creating a secret that holds the key, tagged for rotation with a grace period of {GRACE} "
            "(OldKeyAction=delete)")
    secret_name = f"api-keys/partner-a-{suffix}"
    secret = sm.create_secret(
        Name=secret_name,
        SecretString=json.dumps({"api_key_id": first["id"]}),
        Tags=[{"Key": "KeyName", "Value": "partner-a"}, {"Key": "UsagePlan", "Value": plan},
              {"Key": "OldKeyAction", "Value": "delete"}, {"Key": "GracePeriod", "Value": GRACE},
              {"Key": "Project", "Value": "demo"}],
    )["ARN"]

    status = call(a.endpoint, api, first["value"])
    step(4, f"calling the stage with the current key {mask(first['value'])}: HTTP {status}")
    if status != 200:
        raise SystemExit("the first key was not let in")

    def state():
        d = sm.describe_secret(SecretId=secret)
        cur = json.loads(sm.get_secret_value(SecretId=secret)["SecretString"])
        return d["VersionIdsToStages"], cur

    versions_before, cur_before = state()
    step(5, "rotating (RotateSecret, then the four steps through cargo lambda invoke)")
    t0 = time.time()
    rotate(a.endpoint, secret, a.invoke_port, log=lambda m: print("    " + m, flush=True),
           cargo_lambda=a.cargo_lambda)
    took = time.time() - t0
    versions_after, cur_after = state()

    old_id = cur_before["api_key_id"]
    new_id = cur_after["api_key_id"]
    try:
        old = ag.get_api_key(apiKey=old_id)
        old_state = "enabled" if old["enabled"] else "disabled"
    except ag.exceptions.NotFoundException:
        old_state = "deleted"
    attached = {k["id"] for k in ag.get_usage_plan_keys(usagePlanId=plan)["items"]}
    due = retirement_due(sm, secret, old_id)
    if old_state == "enabled" and due is not None:
        old_state = "enabled, in its grace period until " + time.strftime("%H:%M:%SZ", time.gmtime(due))

    def stages(versions):
        return ", ".join(f"{v[:8]}…={'+'.join(sorted(s))}" for v, s in sorted(versions.items()))

    step(6, f"rotation finished in {took:.1f}s")
    rows = [
        ("", "before", "after"),
        ("AWSCURRENT key id", old_id, new_id),
        ("key value", mask(first["value"]), mask(cur_after["api_key_value"])),
        ("key attached to the plan", "yes", "yes" if new_id in attached else "no"),
        ("old key attached", "yes", "yes" if old_id in attached else "no"),
        ("usage plans", plan, ", ".join(cur_after["usage_plan_ids"])),
        ("version stages", stages(versions_before), stages(versions_after)),
        ("old key", "in use", old_state),
    ]
    width = [max(len(str(r[i])) for r in rows) for i in range(3)]
    for r in rows:
        print("    " + "  ".join(str(c).ljust(width[i]) for i, c in enumerate(r)))
    print("    (finishSecret removes AWSPENDING once AWSCURRENT has moved, so no label of a finished\n"
          "     rotation is left for a roll-back to trip over; it scheduled the old key's retirement\n"
          f"     on the secret's tag {SCHEDULE_TAG}<key id> instead of deleting the key)")

    def both_keys():
        new_status = 0
        for _ in range(20):
            new_status = call(a.endpoint, api, cur_after["api_key_value"])
            if new_status == 200:
                break
            time.sleep(0.5)
        return new_status, call(a.endpoint, api, first["value"])

    new_status, old_status = both_keys()
    step(7, f"during the grace period (both keys are let in): new key {mask(cur_after['api_key_value'])}: "
            f"HTTP {new_status}; old key {mask(first['value'])}: HTTP {old_status}")
    if new_status != 200 or old_status != 200 or due is None:
        raise SystemExit("demo failed: expected 200 for both keys during the grace period, and the old "
                         f"key's retirement scheduled (old key {old_state}, schedule tag "
                         f"{'present' if due is not None else 'missing'})")

    wait = max(0.0, due + 0.2 - time.time())  # the sweep retires a key once its due second has come
    step(8, f"waiting {wait:.0f}s for the grace period to end, then one retirement sweep: "
            '{"Action": "retire-expired-keys"} through cargo lambda invoke (a recurring EventBridge rule '
            "sends it every few minutes)")
    time.sleep(wait)
    ok, text = invoke_event({"Action": "retire-expired-keys"}, a.invoke_port, a.cargo_lambda)
    try:
        swept, _ = json.JSONDecoder().raw_decode(text[text.index("{"):])
    except ValueError:
        swept = {}
    print(f"    the sweep answered: {text}", flush=True)
    if not ok or swept.get("retired") != 1:
        raise SystemExit("demo failed: the sweep did not retire the old key")
    try:
        ag.get_api_key(apiKey=old_id)
        old_state = "still there"
    except ag.exceptions.NotFoundException:
        old_state = "deleted"

    new_status, old_status = both_keys()
    step(9, f"after the sweep: new key {mask(cur_after['api_key_value'])}: HTTP {new_status}; "
            f"old key {mask(first['value'])}: HTTP {old_status} (old key {old_state})")
    if new_status != 200 or old_status != 403 or old_state != "deleted":
        raise SystemExit("demo failed: expected 200 for the new key and 403 for the deleted old key")
    if a.function_log:
        # This secret's lines only: the readiness check before the demo was an invocation too.
        docs = [d for d in emf_documents(a.function_log) if d.get("SecretName") == secret_name]
        ns = docs[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"] if docs else "-"
        step(10, f"the metrics the rotation and the sweep emitted (EMF log lines, namespace {ns}, "
                 "docs/metrics.md)")
        rows = metrics_table(docs)
        width = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            print("    " + "  ".join(c.ljust(width[i]) for i, c in enumerate(r)))
        created = sum(d.get("KeysCreated", 0) for d in docs if "Action" not in d and "ErrorType" not in d)
        completed = sum(d.get("RotationCompleted", 0) for d in docs if "Action" not in d and "ErrorType" not in d)
        if len(rows) != 5 or created != 1 or completed != 1:
            raise SystemExit("demo failed: expected four steps' metrics, one key created, one rotation completed")
        sweeps = [d for d in emf_documents(a.function_log) if d.get("Step") == "retire-expired-keys"]
        if sweeps:
            d = sweeps[-1]
            print(f"    the sweep: KeysRetiredAtExpiry {d.get('KeysRetiredAtExpiry')}, "
                  f"KeysPastGrace {d.get('KeysPastGrace')}, SweepDuration {d.get('SweepDuration', 0):.0f} ms")
        if not sweeps or sweeps[-1].get("KeysRetiredAtExpiry") != 1:
            raise SystemExit("demo failed: expected the sweep's metrics, one key retired at expiry")
    if a.operator:
        step(11, f"what the operator sees: api-key-rotator status {secret_name} (docs/operator-commands.md)")
        env = {k: v for k, v in os.environ.items() if k != "AWS_LAMBDA_RUNTIME_API"}
        env["AWS_ENDPOINT_URL"] = a.endpoint
        out = subprocess.run([a.operator, "status", secret_name], env=env, capture_output=True, text=True)
        for line in out.stdout.splitlines():
            print("    " + line)
        if out.returncode != 0 or new_id not in out.stdout or cur_after["api_key_value"] in out.stdout:
            sys.stderr.write(out.stderr)
            raise SystemExit(f"demo failed: status exited {out.returncode}, or did not show the new key")
    print("demo passed: both keys worked during the grace period; after it, the sweep deleted the old key and "
          "the gateway refuses it")


if __name__ == "__main__":
    sys.exit(main())
