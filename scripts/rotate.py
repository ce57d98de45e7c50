"""A local stand-in for `aws secretsmanager rotate-secret`.

Like Secrets Manager, it calls RotateSecret on the local AWS, which opens the token's AWSPENDING
version with no value (a function registered in the emulator's Lambda makes it do so, even one
that cannot run), then drives the four steps through the function's Lambda Runtime API with
`cargo lambda invoke`, re-running the whole rotation with the same token when a step fails.

    python scripts/rotate.py --endpoint http://127.0.0.1:PORT --invoke-port 9000 SECRET
"""

import argparse
import io
import json
import os
import subprocess
import sys
import uuid
import zipfile

import boto3

STEPS = ["createSecret", "setSecret", "testSecret", "finishSecret"]
FUNCTION = "api-key-rotator"


def clients(endpoint):
    kw = dict(endpoint_url=endpoint, region_name=os.environ.get("AWS_REGION", "us-east-1"),
              aws_access_key_id="test", aws_secret_access_key="test")
    return boto3.client("secretsmanager", **kw), boto3.client("lambda", **kw), boto3.client("apigateway", **kw)


def function_arn(lam):
    """The rotation function as the emulator's Lambda knows it (registered once; it never runs)."""
    try:
        return lam.get_function(FunctionName=FUNCTION)["Configuration"]["FunctionArn"]
    except lam.exceptions.ResourceNotFoundException:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("bootstrap", "#!/bin/sh\nexit 1\n")
        return lam.create_function(
            FunctionName=FUNCTION, Runtime="provided.al2023", Handler="bootstrap",
            Role="arn:aws:iam::000000000000:role/api-key-rotator", Code={"ZipFile": buf.getvalue()},
        )["FunctionArn"]


def invoke_event(event, invoke_port, cargo_lambda="cargo-lambda"):
    """One invocation of the function with `event` through `cargo lambda invoke`; returns
    (ok, text): the function's answer, or its error."""
    p = subprocess.run(
        [cargo_lambda, "lambda", "invoke", FUNCTION, "--invoke-address", "127.0.0.1",
         "--invoke-port", str(invoke_port), "--data-ascii", json.dumps(event)],
        capture_output=True, text=True, timeout=600,
    )
    text = (p.stdout + p.stderr).strip()
    return p.returncode == 0 and "errorType" not in text, text


def invoke(step, secret, token, invoke_port, cargo_lambda="cargo-lambda"):
    """One step through `cargo lambda invoke`; returns (ok, text)."""
    event = {"Step": step, "SecretId": secret, "ClientRequestToken": token}
    return invoke_event(event, invoke_port, cargo_lambda)


def rotate(endpoint, secret, invoke_port, tries=3, log=print, cargo_lambda="cargo-lambda"):
    sm, lam, _ = clients(endpoint)
    stages = sm.describe_secret(SecretId=secret).get("VersionIdsToStages", {})
    unfinished = [v for v, s in stages.items() if "AWSPENDING" in s and "AWSCURRENT" not in s]
    if unfinished:
        # What Secrets Manager does: "A previous rotation isn't complete. That rotation will be
        # reattempted." (the emulator's RotateSecret refuses instead).
        token = unfinished[0]
        log(f"a previous rotation isn't complete: re-running version {token}, as Secrets Manager does")
    else:
        token = str(uuid.uuid4())
        sm.rotate_secret(SecretId=secret, RotationLambdaARN=function_arn(lam),
                         RotationRules={"AutomaticallyAfterDays": 30}, ClientRequestToken=token)
        log(f"RotateSecret opened version {token} (AWSPENDING, no value yet)")
    for attempt in range(1, tries + 1):
        for step in STEPS:
            ok, text = invoke(step, secret, token, invoke_port, cargo_lambda)
            if not ok:
                log(f"  {step} failed (try {attempt}): {text}")
                break
            log(f"  {step} ok")
        else:
            return token
        log("  re-running the whole rotation with the same token, as Secrets Manager does")
    raise SystemExit(f"rotation of {secret} did not complete in {tries} tries")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("secret")
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--invoke-port", type=int, default=9000)
    ap.add_argument("--tries", type=int, default=3)
    ap.add_argument("--cargo-lambda", default="cargo-lambda")
    a = ap.parse_args()
    token = rotate(a.endpoint, a.secret, a.invoke_port, a.tries, cargo_lambda=a.cargo_lambda)
    print(f"rotated {a.secret}: AWSCURRENT is now {token}")


if __name__ == "__main__":
    sys.exit(main())
