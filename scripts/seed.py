"""An example partner on the local AWS that `make up` started, for hand-driven runs.

Creates what a platform team has before it enables rotation: a REST API whose GET / needs an API
key (MOCK integration, stage prod), a usage plan covering it, the partner's first key, made by
hand and named exactly the KeyName, as keys migrated from another rotator often are, and a secret
holding that key in the full value, tagged for rotation. Prints the secret's name and the next
commands. Run by `make up` and `make seed`.

    python scripts/seed.py --endpoint http://127.0.0.1:PORT [--policy keep-previous]
"""

import argparse
import json
import time

from rotate import clients


def create_stage(ag, name):
    """A REST API whose GET / needs an API key (MOCK integration), deployed to stage prod."""
    api = ag.create_rest_api(name=name)["id"]
    root = next(r["id"] for r in ag.get_resources(restApiId=api)["items"] if r["path"] == "/")
    ag.put_method(restApiId=api, resourceId=root, httpMethod="GET", authorizationType="NONE", apiKeyRequired=True)
    ag.put_integration(restApiId=api, resourceId=root, httpMethod="GET", type="MOCK",
                       requestTemplates={"application/json": '{"statusCode": 200}'})
    ag.put_method_response(restApiId=api, resourceId=root, httpMethod="GET", statusCode="200")
    ag.put_integration_response(restApiId=api, resourceId=root, httpMethod="GET", statusCode="200",
                                responseTemplates={"application/json": '{"ok": true}'})
    ag.create_deployment(restApiId=api, stageName="prod")
    return api


def create_plan(ag, name, api):
    """A usage plan (5 rps, burst 10, 1000 a day) covering the API's prod stage."""
    return ag.create_usage_plan(name=name, apiStages=[{"apiId": api, "stage": "prod"}],
                                throttle={"rateLimit": 5.0, "burstLimit": 10},
                                quota={"limit": 1000, "period": "DAY"})["id"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--policy", default="keep-previous", choices=["delete", "disable", "keep-previous"])
    ap.add_argument("--grace", default="", help="a GracePeriod tag (30s, 2m, 2h, 7d; delete or disable only)")
    a = ap.parse_args()
    sm, _, ag = clients(a.endpoint)
    n = time.strftime("%H%M%S")
    name = f"example-partner-{n}"

    api = create_stage(ag, f"{name}-api")
    plan = create_plan(ag, f"{name}-plan", api)
    key = ag.create_api_key(name=name, enabled=True, description=f"{name}'s first key")
    ag.create_usage_plan_key(usagePlanId=plan, keyId=key["id"], keyType="API_KEY")
    secret = f"api-keys/{name}"
    value = {"api_key_id": key["id"], "api_key_value": key["value"], "key_name": name, "usage_plan_ids": [plan]}
    sm.create_secret(Name=secret, SecretString=json.dumps(value),
                     Tags=[{"Key": "KeyName", "Value": name}, {"Key": "UsagePlan", "Value": plan},
                           {"Key": "OldKeyAction", "Value": a.policy}]
                     + ([{"Key": "GracePeriod", "Value": a.grace}] if a.grace else []))

    print(f"""
example partner on the local AWS at {a.endpoint}:
  secret    {secret}   (KeyName {name}, UsagePlan {plan}, OldKeyAction {a.policy}{', GracePeriod ' + a.grace if a.grace else ''})
  first key {key['id']}, named exactly the KeyName, attached to the plan
  stage     {a.endpoint}/_aws/execute-api/{api}/prod/   (send the key as x-api-key)

next:
  make watch                      # in another terminal: the function under cargo lambda watch
  make rotate SECRET={secret}
  make status SECRET={secret}   # api-key-rotator status (check, cleanup, rollback: make ops ARGS="...")
  make invoke STEP=createSecret SECRET={secret} TOKEN=...   # one step by hand
  make seed                       # another example partner
  make down                       # stop the local AWS
""")


if __name__ == "__main__":
    main()
