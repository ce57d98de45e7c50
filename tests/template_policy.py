"""Least-privilege check of template.yaml's IAM policies.

Fails on any action with a wildcard (`*` or `service:*` or `service:Get*`), and on
`Resource: "*"` for any action that writes. Checks the tie-tag conditions on every API-key write,
and the optional operator policies (scoped to SecretNamePrefix, ListSecrets alone on "*", the
reader honest about reading key values). Both branches of every Fn::If are checked. Before it
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


READER = "OperatorReadKeyValuesPolicy"
OPERATOR = "OperatorCleanupRollbackPolicy"
READER_NEEDS = {"secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue",
                "secretsmanager:ListSecretVersionIds", "secretsmanager:ListSecrets", "apigateway:GET",
                "lambda:GetFunctionConfiguration"}
# cleanup --apply: detach and delete (DELETE); rollback --apply: re-enable (PATCH), put the key
# back on a plan it left (POST /usageplans/{id}/keys), move the stages.
OPERATOR_NEEDS = {"secretsmanager:UpdateSecretVersionStage", "apigateway:PATCH", "apigateway:DELETE",
                  "apigateway:POST"}
READER_PATHS = ("/apikeys", "/apikeys/*", "/usageplans", "/usageplans/*", "/usageplans/*/keys",
                "%2Fapikeys%2F*")


def resource_text(r):
    if isinstance(r, dict):
        r = r.get("Fn::Sub", r)
        if isinstance(r, list):  # !Sub [template, {vars}]
            r = r[0]
    return str(r)


def operator_policy_problems(template):
    """The optional operator policies: each exists under the CreateOperatorPolicies condition;
    Resource "*" only for ListSecrets, and ListSecrets only on "*"; every secret action on the
    secrets under SecretNamePrefix; the reader reads only (kms:Decrypt aside) and says in its
    description that it can read key values; the operator policy has what cleanup --apply and
    rollback --apply need and writes nothing else."""
    found = []
    resources = template.get("Resources") or {}
    for name, needs in ((READER, READER_NEEDS), (OPERATOR, OPERATOR_NEEDS)):
        res = resources.get(name)
        if not res or res.get("Type") != "AWS::IAM::ManagedPolicy":
            found.append(f"{name}: no such AWS::IAM::ManagedPolicy")
            continue
        if not res.get("Condition"):
            found.append(f"{name}: not optional (no Condition)")
        props = res.get("Properties") or {}
        have = set()
        for st in as_list((props.get("PolicyDocument") or {}).get("Statement", [])):
            if not isinstance(st, dict):
                continue
            sid = st.get("Sid", "?")
            actions = [a for a in as_list(st.get("Action", [])) if isinstance(a, str)]
            have.update(actions)
            targets = as_list(st.get("Resource", []))
            if st.get("Effect") != "Allow" or st.get("NotResource") is not None:
                found.append(f"{name}/{sid}: only Allow statements on named resources are expected")
            if "*" in targets and actions != ["secretsmanager:ListSecrets"]:
                found.append(f"{name}/{sid}: Resource \"*\" for {actions}; only ListSecrets may have it")
            if "secretsmanager:ListSecrets" in actions and targets != ["*"]:
                found.append(f"{name}/{sid}: ListSecrets cannot be scoped; expected Resource \"*\" alone, got {targets}")
            for a in actions:
                if a.startswith("secretsmanager:") and a != "secretsmanager:ListSecrets":
                    if not all(names_prefix(t) and ":secret:" in resource_text(t) for t in targets):
                        found.append(f"{name}/{sid}: {a} on secrets outside SecretNamePrefix ({targets})")
                if a.startswith("apigateway:"):
                    for t in targets:
                        text = resource_text(t)
                        if ":apigateway:" not in text and "Fn::Split" not in str(t):
                            found.append(f"{name}/{sid}: {a} on {text}, not an API Gateway path")
                if a == "lambda:GetFunctionConfiguration" and targets != [{"Fn::GetAtt": ["Rotator", "Arn"]}]:
                    found.append(f"{name}/{sid}: {a} on {targets}, not the rotation function alone")
                if name == OPERATOR and a == "apigateway:POST" and not all(
                        resource_text(t).endswith("/keys") or "Fn::Split" in str(t) for t in targets):
                    found.append(f"{name}/{sid}: POST beyond attaching keys to plans ({targets})")
                if name == READER and is_write(a) and a != "kms:Decrypt":
                    found.append(f"{name}/{sid}: the reader may not write ({a})")
            if name == READER and "apigateway:GET" in actions:
                texts = " ".join(resource_text(t) for t in targets)
                for path in READER_PATHS:
                    if not any(resource_text(t).endswith("::" + path) or resource_text(t).endswith(path)
                               for t in targets):
                        found.append(f"{name}/{sid}: GET {path} missing ({texts})")
        for a in sorted(needs - have):
            found.append(f"{name}: {a} missing")
        if name == OPERATOR:
            extra = {a for a in have if is_write(a)} - OPERATOR_NEEDS
            if extra:
                found.append(f"{name}: writes beyond cleanup and rollback: {sorted(extra)}")
        if name == READER:
            desc = props.get("Description")
            desc = resource_text(desc) if desc is not None else ""
            if "key values" not in " ".join(desc.split()).lower():
                found.append(f"{name}: its Description must say that it can read key values")
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
    secret = {"Fn::Sub": "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:${SecretNamePrefix}*"}
    reader = {"Type": "AWS::IAM::ManagedPolicy", "Condition": "C", "Properties": {
        "Description": "Read-only access for operators.", "PolicyDocument": {"Statement": [
            {"Sid": "S", "Effect": "Allow", "Action": ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
             "Resource": "*"},
            {"Sid": "L", "Effect": "Allow", "Action": "secretsmanager:ListSecrets", "Resource": secret},
            {"Sid": "G", "Effect": "Allow", "Action": ["apigateway:GET", "apigateway:DELETE"],
             "Resource": [{"Fn::Sub": "arn:${AWS::Partition}:apigateway:${AWS::Region}::/apikeys/*"}]},
        ]}}}
    operator = {"Type": "AWS::IAM::ManagedPolicy", "Properties": {"PolicyDocument": {"Statement": [
        {"Sid": "U", "Effect": "Allow", "Action": "secretsmanager:UpdateSecretVersionStage",
         "Resource": "arn:aws:secretsmanager:r:1:secret:*"},
        {"Sid": "P", "Effect": "Allow", "Action": "secretsmanager:PutSecretValue", "Resource": secret},
    ]}}}
    found = operator_policy_problems({"Resources": {READER: reader, OPERATOR: operator}})
    expected = ["Resource \"*\" for", "ListSecrets cannot be scoped", "GetSecretValue on secrets outside",
                "the reader may not write (apigateway:DELETE)", "GET /usageplans missing",
                "ListSecretVersionIds missing", "lambda:GetFunctionConfiguration missing",
                "must say that it can read key values", f"{OPERATOR}: not optional",
                "UpdateSecretVersionStage on secrets outside", "apigateway:PATCH missing",
                "apigateway:POST missing",
                "writes beyond cleanup and rollback: ['secretsmanager:PutSecretValue']"]
    missed = [e for e in expected if not any(e in f for f in found)]
    assert not missed, f"the operator policy check missed {missed}: {found}"


def main(path):
    self_check()
    template, matches = decode(path)
    if template is None:
        print(f"cannot read {path}: {matches}")
        return 1
    count, found = problems(template)
    found += ownership_problems(template)
    found += operator_policy_problems(template)
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
