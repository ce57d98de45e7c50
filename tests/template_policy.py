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


TIE = "api-key-rotator:secret-arn"
PREFIX_ARN = ":secretsmanager:"


def names_prefix(value):
    """A condition value that names secrets under SecretNamePrefix (a !Sub of the ARN)."""
    text = value.get("Fn::Sub") if isinstance(value, dict) else value
    return isinstance(text, str) and PREFIX_ARN in text and "${SecretNamePrefix}*" in text


def ownership_problems(template):
    """The API-key writes are allowed only on keys tied to a secret under SecretNamePrefix:
    create only with the tie tag in the request; PATCH and DELETE only on keys whose tie tag
    names such a secret; tagging only the tie tag, only onto a key that has none yet."""
    found = []
    key_writes = {}
    for where, st in statements(template):
        actions = [a for a in as_list(st.get("Action", [])) if isinstance(a, str)]
        resources = [r.get("Fn::Sub", r) if isinstance(r, dict) else r for r in as_list(st.get("Resource", []))]
        text = " ".join(str(r) for r in resources)
        cond = st.get("Condition") or {}
        sid = st.get("Sid", "?")
        for a in actions:
            if a in ("apigateway:PATCH", "apigateway:DELETE") and "/apikeys/*" in text:
                key_writes.setdefault("retire", []).append(sid)
                if not names_prefix((cond.get("StringLike") or {}).get(f"aws:ResourceTag/{TIE}")):
                    found.append(f"{where}/{sid}: {a} on API keys without aws:ResourceTag/{TIE} naming SecretNamePrefix")
            if a == "apigateway:POST" and any(str(r).endswith("/apikeys") for r in resources):
                key_writes.setdefault("create", []).append(sid)
                if not names_prefix((cond.get("StringLike") or {}).get(f"aws:RequestTag/{TIE}")):
                    found.append(f"{where}/{sid}: CreateApiKey without aws:RequestTag/{TIE} naming SecretNamePrefix")
            if a == "apigateway:PUT" and "/tags/" in text:
                key_writes.setdefault("tag", []).append(sid)
                keys = (cond.get("ForAllValues:StringEquals") or {}).get("aws:TagKeys")
                if keys != [TIE]:
                    found.append(f"{where}/{sid}: tagging may add tags other than {TIE} ({keys})")
                if not names_prefix((cond.get("StringLike") or {}).get(f"aws:RequestTag/{TIE}")):
                    found.append(f"{where}/{sid}: tagging a tie that names no secret under SecretNamePrefix")
                if (cond.get("Null") or {}).get(f"aws:ResourceTag/{TIE}") != "true":
                    found.append(f"{where}/{sid}: tagging a key that is already tied")
    for what in ("create", "retire", "tag"):
        if what not in key_writes:
            found.append(f"no statement allows the {what} of API keys: the check would prove nothing")
    return found


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
    prefix = {"Fn::Sub": "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:${SecretNamePrefix}*"}
    loose = {"Resources": {"R": {"Type": "AWS::IAM::Role", "Properties": {"Policies": [{
        "PolicyName": "p", "PolicyDocument": {"Statement": [
            {"Sid": "Create", "Effect": "Allow", "Action": "apigateway:POST", "Resource": "arn:aws:apigateway:r::/apikeys"},
            {"Sid": "Retire", "Effect": "Allow", "Action": ["apigateway:DELETE"], "Resource": "arn:aws:apigateway:r::/apikeys/*",
             "Condition": {"StringLike": {f"aws:ResourceTag/{TIE}": "*"}}},
            {"Sid": "Tag", "Effect": "Allow", "Action": "apigateway:PUT", "Resource": "arn:aws:apigateway:r::/tags/x",
             "Condition": {"StringLike": {f"aws:RequestTag/{TIE}": prefix}}},
        ]}}]}}}}
    found = ownership_problems(loose)
    assert len(found) == 4, f"the ownership check missed a loose statement: {found}"


def main(path):
    self_check()
    template, matches = decode(path)
    if template is None:
        print(f"cannot read {path}: {matches}")
        return 1
    count, found = problems(template)
    found += ownership_problems(template)
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
