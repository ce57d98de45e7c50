"""Least-privilege check of template.yaml's IAM policies.

Fails on any action with a wildcard (`*` or `service:*` or `service:Get*`), and on
`Resource: "*"` for any action that writes. Both branches of every Fn::If are checked. Before it
reads the template it proves, on a policy built to be wrong, that it does fail.

    .local/tools-venv/bin/python tests/template_policy.py template.yaml
"""

import sys

from cfnlint.decode import decode

READ_VERBS = ("Get", "List", "Describe")
READ_METHODS = {"apigateway:GET"}


def is_write(action):
    service, _, name = action.partition(":")
    if action in READ_METHODS:
        return False
    if service == "apigateway":
        return True  # POST, PUT, PATCH, DELETE
    return not name.startswith(READ_VERBS)


def branches(node):
    """Every concrete value a node can take, expanding Fn::If both ways."""
    if isinstance(node, dict) and list(node) == ["Fn::If"]:
        _, a, b = node["Fn::If"]
        return branches(a) + branches(b)
    if isinstance(node, dict) and list(node) == ["Ref"] and node["Ref"] == "AWS::NoValue":
        return []
    return [node]


def as_list(node):
    out = []
    for v in branches(node):
        if isinstance(v, list):
            for item in v:
                out.extend(branches(item))
        else:
            out.append(v)
    return out


def statements(template):
    """(where, statement) for every IAM statement in roles, policies and SAM functions."""
    for name, res in (template.get("Resources") or {}).items():
        props = res.get("Properties") or {}
        docs = []
        if res.get("Type") == "AWS::IAM::Role":
            docs += [(f"{name}.{p.get('PolicyName')}", p.get("PolicyDocument")) for p in props.get("Policies", [])]
        if res.get("Type") in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            docs.append((name, props.get("PolicyDocument")))
        if res.get("Type") == "AWS::Serverless::Function":
            for p in props.get("Policies", []) if isinstance(props.get("Policies"), list) else []:
                if isinstance(p, dict) and "Statement" in p:
                    docs.append((f"{name}.Policies", p))
        for where, doc in docs:
            for st in as_list((doc or {}).get("Statement", [])):
                if isinstance(st, dict):
                    yield where, st


def problems(template):
    found = []
    count = 0
    for where, st in statements(template):
        count += 1
        sid = st.get("Sid", "?")
        actions = [a for a in as_list(st.get("Action", [])) if isinstance(a, str)]
        if st.get("NotAction") is not None:
            found.append(f"{where}/{sid}: NotAction is not least privilege")
        for a in actions:
            if "*" in a:
                found.append(f"{where}/{sid}: wildcard action {a}")
        resources = as_list(st.get("Resource", []))
        if "*" in resources:
            writes = [a for a in actions if is_write(a)]
            if writes:
                found.append(f"{where}/{sid}: Resource \"*\" on write actions {writes}")
    return count, found


def self_check():
    bad = {"Resources": {"R": {"Type": "AWS::IAM::Role", "Properties": {"Policies": [{
        "PolicyName": "p", "PolicyDocument": {"Statement": [
            {"Sid": "A", "Effect": "Allow", "Action": "apigateway:*", "Resource": "arn:x"},
            {"Sid": "B", "Effect": "Allow", "Action": ["secretsmanager:PutSecretValue"], "Resource": "*"},
            {"Fn::If": ["C", {"Sid": "C", "Effect": "Allow", "Action": "apigateway:DELETE", "Resource": "*"},
                        {"Ref": "AWS::NoValue"}]},
            {"Sid": "D", "Effect": "Allow", "Action": "ec2:DescribeSubnets", "Resource": "*"},
        ]}}]}}}}
    _, found = problems(bad)
    sids = sorted({f.split("/")[1].split(":")[0] for f in found})
    assert sids == ["A", "B", "C"], f"the checker missed a bad statement: {found}"


def main(path):
    self_check()
    template, matches = decode(path)
    if template is None:
        print(f"cannot read {path}: {matches}")
        return 1
    count, found = problems(template)
    for f in found:
        print("FAILED:", f)
    if count == 0:
        print("no IAM statement found")
        return 1
    print(f"IAM statements in {path}:")
    print(f"policy: {count - len(found)} passed, {len(found)} failed")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "template.yaml"))
