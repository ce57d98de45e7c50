"""Least-privilege check of template.yaml's IAM policies, and an IAM evaluator.

Static checks: fails on any action with a wildcard (`*` or `service:*` or `service:Get*`), and
on `Resource: "*"` for any action that writes; checks the tie-tag conditions on every API-key
write, the schedule-tag conditions on every write of a secret's tags (only
`api-key-rotator:retire:*` keys, issue 19), and the optional operator policies (scoped to
SecretNamePrefix, ListSecrets alone on "*", the reader honest about reading key values). Both
branches of every Fn::If are checked.

Evaluator (issue 21): resolves the template for concrete parameters, and authorizes every AWS
call the code lists (rotation::STEP_CALLS, rotation::SWEEP_CALLS, ops::OPERATOR_CALLS) as the
IAM requests AWS authorizes it as, under the function's role and the operator policies: calls on
keys the secret owns must be allowed, calls on other keys denied, schedule tags the only tags
written to a secret, and what IAM cannot tell apart is listed with what guards it
(docs/deploy.md, "What IAM proves, and what it cannot").

Before it reads the template it proves, on policies built to be wrong, that it does fail.

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
    names such a secret (and, for those, never a request that sets the tie), or, for the PATCH
    half of TagResource, the tie alone onto a key that has none; tags (PUT on the tags resource,
    which has no aws:ResourceTag) only in a request that sets the tie naming such a secret."""
    found = []
    key_writes = {}
    for where, st in statements(template):
        actions = [a for a in as_list(st.get("Action", [])) if isinstance(a, str)]
        resources = [r.get("Fn::Sub", r) if isinstance(r, dict) else r for r in as_list(st.get("Resource", []))]
        text = " ".join(str(r) for r in resources)
        cond = st.get("Condition") or {}
        like = cond.get("StringLike") or {}
        null = cond.get("Null") or {}
        sid = st.get("Sid", "?")
        for a in actions:
            if a in ("apigateway:PATCH", "apigateway:DELETE") and "/apikeys/*" in text:
                if names_prefix(like.get(f"aws:ResourceTag/{TIE}")):
                    key_writes.setdefault("retire", []).append(sid)
                    if null.get(f"aws:RequestTag/{TIE}") != "true":
                        found.append(f"{where}/{sid}: {a} on tied keys may set the tie (re-tie a tied key)")
                elif a == "apigateway:PATCH" and null.get(f"aws:ResourceTag/{TIE}") == "true":
                    key_writes.setdefault("tie", []).append(sid)
                    if not names_prefix(like.get(f"aws:RequestTag/{TIE}")):
                        found.append(f"{where}/{sid}: tying a key to no secret under SecretNamePrefix")
                    if (cond.get("ForAllValues:StringEquals") or {}).get("aws:TagKeys") != [TIE]:
                        found.append(f"{where}/{sid}: tying may add tags other than {TIE}")
                else:
                    found.append(f"{where}/{sid}: {a} on API keys without aws:ResourceTag/{TIE} naming SecretNamePrefix")
            if a == "apigateway:POST" and any(str(r).endswith("/apikeys") for r in resources):
                key_writes.setdefault("create", []).append(sid)
                if not names_prefix(like.get(f"aws:RequestTag/{TIE}")):
                    found.append(f"{where}/{sid}: CreateApiKey without aws:RequestTag/{TIE} naming SecretNamePrefix")
            if a == "apigateway:PUT" and "/tags/" in text:
                key_writes.setdefault("tag", []).append(sid)
                if not all("%2Fapikeys%2F" in str(r) for r in resources):
                    found.append(f"{where}/{sid}: tags of resources other than API keys ({text})")
                if not names_prefix(like.get(f"aws:RequestTag/{TIE}")):
                    found.append(f"{where}/{sid}: tagging without a tie that names a secret under SecretNamePrefix")
    for what in ("create", "retire", "tag", "tie"):
        if what not in key_writes:
            found.append(f"no statement allows the {what} of API keys: the check would prove nothing")
    return found


RETIRE_TAGS = "api-key-rotator:retire:*"
SECRET_TAG_WRITES = ("secretsmanager:TagResource", "secretsmanager:UntagResource")


def schedule_tag_problems(template):
    """A secret's tags are its settings (KeyName, UsagePlan, OldKeyAction, GracePeriod, TestUrl):
    whoever may write them may redirect a rotation. So every statement that lets a secret's tags
    be written or removed is limited to the retirement schedule's keys (every key in the request
    under `api-key-rotator:retire:`, and at least one key: ForAllValues alone holds on none), on
    the secrets under SecretNamePrefix."""
    found = []
    for where, st in statements(template):
        actions = [a for a in as_list(st.get("Action", [])) if isinstance(a, str)]
        sid = st.get("Sid", "?")
        for a in actions:
            if a not in SECRET_TAG_WRITES:
                continue
            cond = st.get("Condition") or {}
            keys = (cond.get("ForAllValues:StringLike") or {}).get("aws:TagKeys")
            if keys not in (RETIRE_TAGS, [RETIRE_TAGS]):
                found.append(f"{where}/{sid}: {a} without ForAllValues:StringLike aws:TagKeys {RETIRE_TAGS} "
                             f"(got {keys!r}): it could write the secret's settings")
            if (cond.get("Null") or {}).get("aws:TagKeys") != "false":
                found.append(f"{where}/{sid}: {a} without Null aws:TagKeys false: ForAllValues holds on a request with no keys")
            targets = as_list(st.get("Resource", []))
            if not targets or not all(names_prefix(t) and ":secret:" in resource_text(t) for t in targets):
                found.append(f"{where}/{sid}: {a} on secrets outside SecretNamePrefix ({targets})")
    return found


READER = "OperatorReadKeyValuesPolicy"
OPERATOR = "OperatorCleanupRollbackPolicy"
READER_NEEDS = {"secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue",
                "secretsmanager:ListSecretVersionIds", "secretsmanager:ListSecrets", "apigateway:GET",
                "lambda:GetFunctionConfiguration"}
# cleanup --apply: detach and delete (DELETE), remove an ended schedule tag (UntagResource);
# rollback --apply: re-enable (PATCH), put the key back on a plan it left (POST
# /usageplans/{id}/keys), move the stages, schedule the key it rolls back from (TagResource) and
# unschedule the one it puts back; revoke --apply: rotate now (RotateSecret, and InvokeFunction on
# the rotation function, which RotateSecret also needs), remove the retired keys' schedule tags.
OPERATOR_NEEDS = {"secretsmanager:UpdateSecretVersionStage", "apigateway:PATCH", "apigateway:DELETE",
                  "apigateway:POST", "secretsmanager:RotateSecret", "secretsmanager:TagResource",
                  "secretsmanager:UntagResource", "lambda:InvokeFunction"}
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
                if a.startswith("lambda:") and targets != [{"Fn::GetAtt": ["Rotator", "Arn"]}]:
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
                found.append(f"{name}: writes beyond cleanup, rollback and revoke: {sorted(extra)}")
        if name == READER:
            desc = props.get("Description")
            desc = resource_text(desc) if desc is not None else ""
            if "key values" not in " ".join(desc.split()).lower():
                found.append(f"{name}: its Description must say that it can read key values")
    return found


# ---------------------------------------------------------------------------------------------
# The evaluator (issue 21): every AWS call the code can make, authorized the way AWS authorizes
# it, against the policies this template deploys, resolved for concrete parameters.
#
# What a call is authorized as comes from the Service Authorization Reference for Amazon API
# Gateway Management ("Actions, resources, and condition keys"): its API operations table
# (CreateApiKey = apigateway:POST and apigateway:PUT), its actions table (PUT on the Tags
# resource supports aws:RequestTag and aws:TagKeys only; PATCH, DELETE and GET on ApiKey support
# aws:ResourceTag) and its resource types (the tags resource is /tags/${UrlEncodedResourceARN}).
# A usage plan key's aws:ResourceTag is its plan's ("API Gateway resources that can be tagged":
# UsagePlanKey inherits the tags of its UsagePlan). TagResource is modelled both as the reference
# lists it (PUT on the tags resource) and as a public report says AWS authorizes it (PUT, and
# PATCH on the tagged resource: iann0036/iam-dataset#39): the policies must hold under both.
# ---------------------------------------------------------------------------------------------

import copy
import re
from pathlib import Path
from urllib.parse import quote

NOVALUE = object()
PSEUDO = {"AWS::Partition": "aws", "AWS::Region": "us-east-1", "AWS::AccountId": "111122223333",
          "AWS::StackName": "rotator", "AWS::URLSuffix": "amazonaws.com"}


class Resolver:
    """CloudFormation intrinsics for one set of parameter values: Ref, Fn::Sub, Fn::If (with the
    template's Conditions), Fn::Join, Fn::Split, Fn::Select, Fn::GetAtt (a made-up ARN)."""

    def __init__(self, template, params):
        self.template = template
        self.params = {}
        for name, spec in (template.get("Parameters") or {}).items():
            value = params.get(name, spec.get("Default", ""))
            if spec.get("Type") == "CommaDelimitedList" and isinstance(value, str):
                value = value.split(",") if value else [""]
            self.params[name] = value
        unknown = set(params) - set(self.params)
        assert not unknown, f"no such parameters: {unknown}"

    def condition(self, name):
        return self.truth((self.template.get("Conditions") or {})[name])

    def truth(self, node):
        (fn, arg), = node.items()
        if fn == "Fn::Equals":
            return self.resolve(arg[0]) == self.resolve(arg[1])
        if fn == "Fn::Not":
            return not self.truth(arg[0])
        if fn == "Fn::And":
            return all(self.truth(a) for a in arg)
        if fn == "Fn::Or":
            return any(self.truth(a) for a in arg)
        if fn == "Condition":
            return self.condition(arg)
        raise ValueError(f"condition function {fn}")

    def attribute(self, resource, attr):
        p, r, a = PSEUDO["AWS::Partition"], PSEUDO["AWS::Region"], PSEUDO["AWS::AccountId"]
        if resource == "Rotator" and attr == "Arn":
            return f"arn:{p}:lambda:{r}:{a}:function:rotator-rotator"
        if resource == "RotatorLogGroup" and attr == "Arn":
            return f"arn:{p}:logs:{r}:{a}:log-group:/aws/lambda/rotator-rotator:*"
        return f"arn:{p}:fake:{r}:{a}:{resource}/{attr}"

    def ref(self, name):
        if name == "AWS::NoValue":
            return NOVALUE
        if name in PSEUDO:
            return PSEUDO[name]
        if name in self.params:
            return self.params[name]
        if name in (self.template.get("Resources") or {}):
            return f"{name}-physical-id"
        raise KeyError(name)

    def sub(self, text, names):
        def one(m):
            inner = m.group(1)
            if inner.startswith("!"):
                return "${" + inner[1:] + "}"
            if inner in names:
                return str(names[inner])
            if "." in inner and inner.split(".")[0] in (self.template.get("Resources") or {}):
                return self.attribute(*inner.split(".", 1))
            value = self.ref(inner)
            assert isinstance(value, str), f"${{{inner}}} is not a string"
            return value
        return re.sub(r"\$\{([^}]+)\}", one, text)

    def resolve(self, node):
        if isinstance(node, dict):
            if len(node) == 1:
                (fn, arg), = node.items()
                if fn == "Ref":
                    return self.ref(arg)
                if fn == "Fn::Sub":
                    if isinstance(arg, str):
                        return self.sub(arg, {})
                    names = {k: self.resolve(v) for k, v in arg[1].items()}
                    return self.sub(arg[0], names)
                if fn == "Fn::If":
                    return self.resolve(arg[1] if self.condition(arg[0]) else arg[2])
                if fn == "Fn::Join":
                    return str(arg[0]).join(str(v) for v in self.resolve(arg[1]))
                if fn == "Fn::Split":
                    return self.resolve(arg[1]).split(arg[0])
                if fn == "Fn::Select":
                    return self.resolve(arg[1])[int(self.resolve(arg[0]))]
                if fn == "Fn::GetAtt":
                    res, attr = arg if isinstance(arg, list) else arg.split(".", 1)
                    return self.attribute(res, attr)
            out = {}
            for k, v in node.items():
                v = self.resolve(v)
                if v is not NOVALUE:
                    out[str(k)] = v
            return out
        if isinstance(node, list):
            return [v for v in (self.resolve(x) for x in node) if v is not NOVALUE]
        return str(node) if isinstance(node, str) else node

    def policies(self):
        """{name: [statement]} for the role's inline policies and each managed policy that the
        parameters create."""
        out = {}
        for name, res in (self.template.get("Resources") or {}).items():
            if res.get("Condition") and not self.condition(res["Condition"]):
                continue
            props = res.get("Properties") or {}
            if res.get("Type") == "AWS::IAM::Role":
                out[name] = [st for p in props.get("Policies", [])
                             for st in self.resolve(p)["PolicyDocument"]["Statement"]]
            if res.get("Type") == "AWS::IAM::ManagedPolicy":
                out[name] = self.resolve(props["PolicyDocument"])["Statement"]
        return out


def glob(pattern, value, ignore_case=False):
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, (re.IGNORECASE | re.DOTALL) if ignore_case else re.DOTALL) is not None


def arn_like(pattern, arn):
    """ARN matching as IAM does it: segment by segment (a wildcard does not cross a colon before
    the resource part), the resource part as a whole."""
    if pattern == "*":
        return True
    p, a = pattern.split(":", 5), arn.split(":", 5)
    if len(p) != 6 or len(a) != 6:
        return glob(pattern, arn)
    return all(glob(x, y) for x, y in zip(p, a))


MATCHERS = {
    "StringEquals": (lambda v, p: v == p, False),
    "StringNotEquals": (lambda v, p: v == p, True),
    "StringEqualsIgnoreCase": (lambda v, p: v.lower() == p.lower(), False),
    "StringNotEqualsIgnoreCase": (lambda v, p: v.lower() == p.lower(), True),
    "StringLike": (lambda v, p: glob(p, v), False),
    "StringNotLike": (lambda v, p: glob(p, v), True),
    "ArnEquals": (lambda v, p: arn_like(p, v), False),
    "ArnLike": (lambda v, p: arn_like(p, v), False),
    "ArnNotEquals": (lambda v, p: arn_like(p, v), True),
    "ArnNotLike": (lambda v, p: arn_like(p, v), True),
    "Bool": (lambda v, p: str(v).lower() == str(p).lower(), False),
}


def condition_holds(operator, key, wanted, context):
    """One key under one operator. Policy values are alternatives (any may match; a negated
    operator needs none to match). A missing key fails a positive operator and passes a negated
    one; IfExists passes it either way. ForAllValues holds on an empty set, ForAnyValue fails."""
    wanted = wanted if isinstance(wanted, list) else [wanted]
    qualifier, _, op = operator.rpartition(":")
    if_exists = op.endswith("IfExists")
    op = op[:-len("IfExists")] if if_exists else op
    value = context.get(key)
    present = value is not None and value != []
    if op == "Null":
        assert not qualifier and len(wanted) == 1, f"Null takes one value: {wanted}"
        return (not present) == (str(wanted[0]).lower() == "true")
    if op not in MATCHERS:
        raise ValueError(f"condition operator {operator} is not modelled")
    match, negated = MATCHERS[op]
    if not qualifier:
        if isinstance(value, list):
            raise ValueError(f"{operator} on the multivalued key {key}: use ForAllValues/ForAnyValue")
        if not present:
            return if_exists or negated
        hit = any(match(str(value), str(p)) for p in wanted)
        return hit != negated
    values = value if isinstance(value, list) else ([] if value is None else [value])
    hits = [any(match(str(v), str(p)) for p in wanted) != negated for v in values]
    if qualifier == "ForAllValues":
        return all(hits)
    if qualifier == "ForAnyValue":
        return any(hits) if values else if_exists
    raise ValueError(f"set operator {qualifier}")


def applies(statement, action, resource, context):
    def listed(field):
        v = statement.get(field)
        return None if v is None else (v if isinstance(v, list) else [v])
    actions, not_actions = listed("Action"), listed("NotAction")
    if actions is not None and not any(glob(a, action, ignore_case=True) for a in actions):
        return False
    if not_actions is not None and any(glob(a, action, ignore_case=True) for a in not_actions):
        return False
    resources, not_resources = listed("Resource"), listed("NotResource")
    if resources is not None and not any(arn_like(r, resource) for r in resources):
        return False
    if not_resources is not None and any(arn_like(r, resource) for r in not_resources):
        return False
    for operator, keys in (statement.get("Condition") or {}).items():
        for key, wanted in keys.items():
            if not condition_holds(operator, key, wanted, context):
                return False
    return True


def decide(statements, action, resource, context):
    """("allow", sids) when an Allow applies and no Deny does; ("deny", sids) otherwise."""
    deny = [s.get("Sid", "?") for s in statements if s.get("Effect") == "Deny" and applies(s, action, resource, context)]
    if deny:
        return "deny", deny
    allow = [s.get("Sid", "?") for s in statements if s.get("Effect") == "Allow" and applies(s, action, resource, context)]
    return ("allow", allow) if allow else ("deny", [])


def authorize(statements, requests):
    """A call is allowed when every request it is authorized as is allowed."""
    verdicts = [(r, *decide(statements, *r)) for r in requests]
    refused = [f"{a} on {res}" for (a, res, _), v, _ in verdicts if v == "deny"]
    return ("deny" if refused else "allow"), refused


# --- The world the calls are made in. ---
P, R, ACCOUNT = PSEUDO["AWS::Partition"], PSEUDO["AWS::Region"], PSEUDO["AWS::AccountId"]
SECRET = f"arn:{P}:secretsmanager:{R}:{ACCOUNT}:secret:api-keys/partner-a-AbCdEf"
SIBLING = f"arn:{P}:secretsmanager:{R}:{ACCOUNT}:secret:api-keys/partner-b-GhIjKl"
OUTSIDE = f"arn:{P}:secretsmanager:{R}:{ACCOUNT}:secret:other-team/keys-MnOpQr"
FUNCTION = f"arn:{P}:lambda:{R}:{ACCOUNT}:function:rotator-rotator"
OTHER_FUNCTION = f"arn:{P}:lambda:{R}:{ACCOUNT}:function:someone-else"
KMS_KEY = f"arn:{P}:kms:{R}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
PLAN, OTHER_PLAN = "plan01", "zzz999"
KEYS = {  # id: tags, as GetTags shows them
    "owned": ("owntied01", {TIE: SECRET, "Project": "p1"}),
    "owned-untied": ("adopted01", {"Project": "p1"}),  # a labelled version holds it, not yet tied
    "sibling": ("sibling01", {TIE: SIBLING}),  # another secret under the prefix
    "foreign": ("foreign01", {TIE: OUTSIDE}),  # another rotator's secret
    "nobody": ("nobody001", {"Project": "x"}),
}
COPIED = {"Project": "p1", "CostCategory": "partners"}  # tags copied from the secret


def apigw(path):
    return f"arn:{P}:apigateway:{R}::{path}"


def tags_of(arn):
    return apigw("/tags/" + quote(arn, safe="*"))


def tag_context(request=None, resource=None):
    ctx = {}
    for k, v in (request or {}).items():
        ctx[f"aws:RequestTag/{k}"] = v
    if request is not None:
        ctx["aws:TagKeys"] = sorted(request)
    for k, v in (resource or {}).items():
        ctx[f"aws:ResourceTag/{k}"] = v
    return ctx


def requests_for(call, kms=False, tag_model="reference", new_key_arn="id", key=None, tags=None,
                 plan=PLAN, secret=SECRET, function=FUNCTION, rotation_lambda=None):
    """The IAM requests (action, resource, context) that one call is authorized as."""
    key_id, key_tags = KEYS[key] if key else (None, None)
    # Secrets Manager's own tagging (issue 19: the retirement schedule on the secret's tags):
    # TagResource carries the request tags and their keys, UntagResource the keys it removes.
    if call == "secretsmanager:TagResource":
        return [(call, secret, tag_context(request=tags))]
    if call == "secretsmanager:UntagResource":
        return [(call, secret, {"aws:TagKeys": sorted(tags)})]
    if call == "RotateSecret":  # its API reference: "You also need lambda:InvokeFunction" on the function
        ctx = {} if rotation_lambda is None else {"secretsmanager:RotationLambdaARN": rotation_lambda}
        return [("secretsmanager:RotateSecret", secret, ctx), ("lambda:InvokeFunction", function, {})]
    secrets_kms = {"GetSecretValue": "kms:Decrypt", "PutSecretValue": "kms:GenerateDataKey"}
    if call in ("DescribeSecret", "GetSecretValue", "PutSecretValue", "UpdateSecretVersionStage",
                "ListSecretVersionIds"):
        out = [(f"secretsmanager:{call}", secret, {})]
        if kms and call in secrets_kms:  # Secrets Manager uses the caller's KMS permission
            out.append((secrets_kms[call], KMS_KEY, {"kms:EncryptionContext:SecretARN": secret}))
        return out
    if call == "ListSecrets":
        return [("secretsmanager:ListSecrets", "*", {})]
    if call == "GetFunctionConfiguration":
        return [("lambda:GetFunctionConfiguration", function, {})]
    if call == "GetApiKeys":
        return [("apigateway:GET", apigw("/apikeys"), {})]
    if call == "GetApiKey":
        return [("apigateway:GET", apigw(f"/apikeys/{key_id}"), tag_context(resource=key_tags))]
    if call == "GetTags":
        return [("apigateway:GET", tags_of(apigw(f"/apikeys/{key_id}")), {})]
    if call == "TagResource":
        out = [("apigateway:PUT", tags_of(apigw(f"/apikeys/{key_id}")), tag_context(request=tags))]
        if tag_model == "report":
            out.append(("apigateway:PATCH", apigw(f"/apikeys/{key_id}"), tag_context(tags, key_tags)))
        return out
    if call == "CreateApiKey":  # the new key's tags resource: by its id, or by a placeholder
        new = apigw("/apikeys/" + ("newkey001" if new_key_arn == "id" else "*"))
        out = [("apigateway:POST", apigw("/apikeys"), tag_context(request=tags))]
        return out + ([("apigateway:PUT", tags_of(new), tag_context(request=tags))] if tags else [])
    if call in ("UpdateApiKey", "DeleteApiKey"):
        method = "PATCH" if call == "UpdateApiKey" else "DELETE"
        return [(f"apigateway:{method}", apigw(f"/apikeys/{key_id}"), tag_context(resource=key_tags))]
    if call == "GetUsagePlans":
        return [("apigateway:GET", apigw("/usageplans"), {})]
    if call == "GetUsagePlan":
        return [("apigateway:GET", apigw(f"/usageplans/{plan}"), {})]
    if call == "GetUsagePlanKeys":  # the keys on a plan, read once per plan by status --all
        return [("apigateway:GET", apigw(f"/usageplans/{plan}/keys"), {})]
    if call == "CreateUsagePlanKey":  # the key is in the body
        return [("apigateway:POST", apigw(f"/usageplans/{plan}/keys"), {})]
    if call == "DeleteUsagePlanKey":  # aws:ResourceTag would be the plan's, never the key's
        return [("apigateway:DELETE", apigw(f"/usageplans/{plan}/keys/{key_id}"), {})]
    raise KeyError(f"no IAM mapping for the call {call}")


MAPPED = {"DescribeSecret", "GetSecretValue", "PutSecretValue", "UpdateSecretVersionStage",
          "ListSecretVersionIds", "ListSecrets", "GetFunctionConfiguration", "GetApiKeys", "GetApiKey",
          "GetTags", "TagResource", "CreateApiKey", "UpdateApiKey", "DeleteApiKey", "GetUsagePlans",
          "GetUsagePlan", "GetUsagePlanKeys", "CreateUsagePlanKey", "DeleteUsagePlanKey",
          "secretsmanager:TagResource", "secretsmanager:UntagResource", "RotateSecret"}

# A call name in the code's lists: `TagResource` (API Gateway's), or `secretsmanager:TagResource`
# (a service prefix where two services share an operation's name).
CALL_NAME = r'"((?:[a-z]+:)?[A-Za-z]+)"'


def source_calls(root):
    """The calls the code lists: rotation::STEP_CALLS, rotation::SWEEP_CALLS (the retirement
    sweep's) and ops::OPERATOR_CALLS."""
    found = {}
    for rel, const in (("src/rotation/mod.rs", "STEP_CALLS"), ("src/rotation/sweep.rs", "SWEEP_CALLS"),
                       ("src/ops/mod.rs", "OPERATOR_CALLS")):
        text = (root / rel).read_text()
        m = re.search(rf"const {const}\b[^=]*=\s*&?\[(.*?)\n\];", text, re.S)
        assert m, f"{rel}: {const} not found; update tests/template_policy.py"
        found[const] = set(re.findall(CALL_NAME, m.group(1)))
        unread = set(re.findall(r'"([^"]*)"', m.group(1))) - found[const]
        assert found[const] and not unread, f"{rel}: {const}: cannot read {sorted(unread)}; update tests/template_policy.py"
    return found


# What each principal calls. The function: every call of STEP_CALLS and SWEEP_CALLS. The
# operators: the reads of check and status, and what cleanup --apply, rollback --apply and
# revoke --apply write (src/ops).
OPERATOR_READS = {"DescribeSecret", "GetSecretValue", "ListSecretVersionIds", "ListSecrets",
                  "GetFunctionConfiguration", "GetApiKeys", "GetApiKey", "GetTags", "GetUsagePlans",
                  "GetUsagePlan", "GetUsagePlanKeys"}
OPERATOR_WRITES = {"UpdateApiKey", "DeleteApiKey", "DeleteUsagePlanKey", "CreateUsagePlanKey",
                   "UpdateSecretVersionStage", "RotateSecret", "secretsmanager:TagResource",
                   "secretsmanager:UntagResource"}

# Expectations. "allow" and "deny" are what IAM must decide. "limit" is allowed by IAM because
# IAM cannot tell it apart from an allowed call; each says what guards it instead.
LIMITS = {
    "prefix": "IAM sees every secret under SecretNamePrefix as the role's: which secret a tie names "
              "is checked by the code (src/ownership refuses a key tied to another secret)",
    "untied": "an untied key a labelled version holds looks like any untied key: the code ties only "
              "a key a labelled version of this secret names, read back untied",
    "plan-key": "attach and detach are authorized on the plan, never on the key: the code attaches "
                "and detaches only keys the secret owns, on allow-listed plans",
    "tags-resource": "the tags resource has no aws:ResourceTag, and AWS did not evaluate a PATCH on "
                     "the key in this model: the tie (naming a secret under the prefix) can go onto any key",
    "schedule-prefix": "IAM sees every secret under SecretNamePrefix alike: a schedule tag goes only onto the "
                       "secret whose rotation moved AWSCURRENT, and comes off only the secret the sweep or "
                       "revoke just read it on",
}

# Schedule tags (src/grace.rs): one per key in grace. The settings tags and the tie are not.
RETIRE = "api-key-rotator:retire:owntied01"
DUE = "due:0001101011000100000011001001110000:2026-12-02T15:00:00Z"  # src/grace.rs, schedule_tag
SETTINGS_TAGS = ("KeyName", "UsagePlan", "OldKeyAction", "GracePeriod", "TestUrl", TIE)


def cases(params, tag_model, principal):
    """(call, arguments, expected, limit) for one principal under one model."""
    plans_listed = bool(params.get("AllowedUsagePlanIds"))
    kms = bool(params.get("KmsKeyArn"))
    tie = {TIE: SECRET}
    out = []

    def add(call, expected, limit=None, **args):
        out.append((call, dict(args, kms=kms, tag_model=tag_model), expected, limit))

    reads_allowed = principal in ("function", "reader", "operator")
    for call in ("GetApiKeys", "GetUsagePlans"):
        add(call, "allow" if reads_allowed else "deny")
    for k in KEYS:
        add("GetApiKey", "allow", key=k)
        add("GetTags", "allow", key=k)
    add("GetUsagePlan", "allow", plan=PLAN)
    # The function reads only the allow-listed plans; the operators read every plan (status).
    add("GetUsagePlan", "deny" if plans_listed and principal == "function" else "allow", plan=OTHER_PLAN)
    # status --all reads the keys of every plan; the function does not call it.
    if principal != "function":
        for p in (PLAN, OTHER_PLAN):
            add("GetUsagePlanKeys", "allow", plan=p)
    add("DescribeSecret", "allow")
    add("GetSecretValue", "allow")
    for call in ("DescribeSecret", "GetSecretValue", "PutSecretValue", "UpdateSecretVersionStage"):
        add(call, "deny", secret=OUTSIDE)
    # A secret's tags are its settings: nobody here may write one but a schedule tag.
    for k in SETTINGS_TAGS:
        add("secretsmanager:TagResource", "deny", tags={k: "x"})
        add("secretsmanager:TagResource", "deny", tags={RETIRE: DUE, k: "x"})
        add("secretsmanager:UntagResource", "deny", tags=[k])
        add("secretsmanager:UntagResource", "deny", tags=[RETIRE, k])
    add("secretsmanager:TagResource", "deny", tags={"Project": "moved"})
    add("secretsmanager:TagResource", "deny", tags={})
    add("secretsmanager:UntagResource", "deny", tags=[])
    add("secretsmanager:TagResource", "deny", secret=OUTSIDE, tags={RETIRE: DUE})
    add("secretsmanager:UntagResource", "deny", secret=OUTSIDE, tags=[RETIRE])
    writes = principal == "operator"
    if principal == "function":
        add("PutSecretValue", "allow")
        add("UpdateSecretVersionStage", "allow")
        # The retirement schedule: finishSecret tags, the sweep finds the due secrets and untags.
        add("secretsmanager:TagResource", "allow", tags={RETIRE: DUE})
        add("secretsmanager:UntagResource", "allow", tags=[RETIRE])
        add("secretsmanager:TagResource", "limit", "schedule-prefix", secret=SIBLING, tags={RETIRE: DUE})
        add("secretsmanager:UntagResource", "limit", "schedule-prefix", secret=SIBLING, tags=[RETIRE])
        add("ListSecrets", "allow")
        for call in ("ListSecretVersionIds", "GetFunctionConfiguration"):
            add(call, "deny")  # the operators' calls: the function never needs them
        add("RotateSecret", "deny")  # nor may it start a rotation
        for form in ("id", "placeholder"):
            add("CreateApiKey", "allow", tags=dict(COPIED, **tie), new_key_arn=form)
            add("CreateApiKey", "allow", tags=dict(tie), new_key_arn=form)
            add("CreateApiKey", "deny", tags=dict(COPIED), new_key_arn=form)
            add("CreateApiKey", "deny", tags={}, new_key_arn=form)
            add("CreateApiKey", "deny", tags=dict(COPIED, **{TIE: OUTSIDE}), new_key_arn=form)
        add("TagResource", "allow", key="owned-untied", tags=tie)
        add("TagResource", "limit", "untied", key="nobody", tags=tie)
        for k in KEYS:
            add("TagResource", "deny", key=k, tags={TIE: OUTSIDE})
            add("TagResource", "deny", key=k, tags={"Project": "moved"})
        reported = tag_model == "report"
        for k, t in (("owned-untied", dict(tie, Extra="x")), ("owned", tie), ("sibling", tie), ("foreign", tie)):
            add("TagResource", "deny" if reported else "limit", None if reported else "tags-resource", key=k, tags=t)
    else:
        add("ListSecrets", "allow")
        add("ListSecretVersionIds", "allow")
        add("ListSecretVersionIds", "deny", secret=OUTSIDE)
        add("GetFunctionConfiguration", "allow")
        add("GetFunctionConfiguration", "deny", function=OTHER_FUNCTION)
        add("PutSecretValue", "deny")
        add("UpdateSecretVersionStage", "allow" if writes else "deny")
        for form in ("id", "placeholder"):
            add("CreateApiKey", "deny", tags=dict(COPIED, **tie), new_key_arn=form)
        for k in KEYS:
            add("TagResource", "deny", key=k, tags=tie)
        # revoke --apply: rotate now with the secret's own function, then remove the schedule
        # tags of the keys it retired; rollback --apply schedules and unschedules, cleanup
        # --apply unschedules. The reader does none of it.
        add("RotateSecret", "allow" if writes else "deny")
        add("RotateSecret", "deny", secret=OUTSIDE)
        add("RotateSecret", "deny", function=OTHER_FUNCTION)
        add("RotateSecret", "deny", rotation_lambda=OTHER_FUNCTION)
        add("secretsmanager:UntagResource", "allow" if writes else "deny", tags=[RETIRE])
        add("secretsmanager:TagResource", "allow" if writes else "deny", tags={RETIRE: DUE})
        if not writes:  # the reader writes nothing
            for call in ("UpdateApiKey", "DeleteApiKey", "DeleteUsagePlanKey", "CreateUsagePlanKey"):
                add(call, "deny", key="owned")
            return out
    for call in ("UpdateApiKey", "DeleteApiKey"):
        add(call, "allow", key="owned")
        add(call, "limit", "prefix", key="sibling")
        for k in ("owned-untied", "foreign", "nobody"):
            add(call, "deny", key=k)
    for call in ("DeleteUsagePlanKey", "CreateUsagePlanKey"):
        add(call, "allow", key="owned", plan=PLAN)
        add(call, "limit", "plan-key", key="foreign", plan=PLAN)
        add(call, "deny" if plans_listed else "limit", None if plans_listed else "plan-key",
            key="owned", plan=OTHER_PLAN)
    return out


PARAMETER_SETS = {
    "defaults": {"CreateOperatorPolicies": "true"},
    "scoped": {"CreateOperatorPolicies": "true", "AllowedUsagePlanIds": f"{PLAN},abc123",
               "KmsKeyArn": KMS_KEY, "SubnetIds": "subnet-1", "SecurityGroupIds": "sg-1"},
}
PRINCIPALS = {  # principal: the policies attached to it
    "function": ["RotatorRole"],
    "reader": ["OperatorReadKeyValuesPolicy"],
    "operator": ["OperatorReadKeyValuesPolicy", "OperatorCleanupRollbackPolicy"],
}


def evaluate(template, root):
    """(assertions, failures, limits seen) over every parameter set, TagResource model and
    principal."""
    failures, count, limits = [], 0, {}
    listed = source_calls(root)
    # The function makes the steps' calls and the sweep's.
    step, ops = listed["STEP_CALLS"] | listed["SWEEP_CALLS"], listed["OPERATOR_CALLS"]
    for missing in sorted((step | ops) - MAPPED):
        failures.append(f"the code calls {missing}, which the evaluator has no IAM mapping for")
    for extra in sorted(ops - OPERATOR_READS - OPERATOR_WRITES):
        failures.append(f"the operators call {extra}, which the table does not place")
    for name, params in PARAMETER_SETS.items():
        policies = Resolver(template, params).policies()
        for principal, attached in PRINCIPALS.items():
            if not all(p in policies for p in attached):
                failures.append(f"[{name}] {principal}: no policy {attached}")
                continue
            statements = [st for p in attached for st in policies[p]]
            made = step if principal == "function" else OPERATOR_READS | (OPERATOR_WRITES if principal == "operator" else set())
            for model in ("reference", "report"):
                table = cases(params, model, principal)
                covered = {c for c, _, e, _ in table if e != "deny"}
                for call in sorted(made - covered):
                    failures.append(f"[{name}] {principal} makes {call}, which no allowed case covers")
                for call, args, expected, limit in table:
                    count += 1
                    verdict, refused = authorize(statements, requests_for(call, **args))
                    want = "allow" if expected == "limit" else expected
                    if expected == "limit":
                        limits.setdefault(limit, set()).add(call)
                    if verdict != want:
                        shown = {k: v for k, v in args.items() if k not in ("kms",) and v is not None}
                        failures.append(f"[{name}/{model}] {principal} {call} {shown}: {verdict}, expected {expected}"
                                        + (f" ({LIMITS[limit]}; now denied: update the table)" if limit else "")
                                        + (f"; refused: {refused}" if refused else ""))
    return count, failures, limits


def evaluator_self_check(template, root):
    """The evaluator's verdicts can fail: its semantics on policies built for it, then the real
    template with one guard removed at a time, and the statements this branch replaced."""
    allow_all = {"Effect": "Allow", "Action": "*", "Resource": "*"}
    s = lambda **kw: dict({"Effect": "Allow", "Action": "apigateway:PUT", "Resource": "*"}, **kw)  # noqa: E731
    tagged = tag_context({TIE: SECRET})
    checks = [
        # (statements, action, resource, context, expected)
        ([allow_all], "apigateway:GET", "arn:aws:apigateway:r::/x", {}, "allow"),
        ([allow_all, {"Effect": "Deny", "Action": "apigateway:*", "Resource": "*"}], "apigateway:GET", "arn:x:y:z::a", {}, "deny"),
        ([], "apigateway:GET", "arn:x:y:z::a", {}, "deny"),
        ([s(Action="APIGateway:put")], "apigateway:PUT", "arn:x:y:z::a", {}, "allow"),
        ([s(Action="apigateway:P?T")], "apigateway:PATCH", "arn:x:y:z::a", {}, "deny"),
        ([s(Resource="arn:aws:apigateway:*::/apikeys/*")], "apigateway:PUT", "arn:aws:apigateway:us-east-1::/apikeys/k", {}, "allow"),
        ([s(Resource="arn:aws:apigateway:*::/apikeys/*")], "apigateway:PUT", "arn:aws:apigateway:us-east-1::/apikeys", {}, "deny"),
        ([s(Resource="arn:*:apigateway:*::/usageplans/p1/keys/*")], "apigateway:PUT", "arn:aws:apigateway:r::/usageplans/p2/keys/k", {}, "deny"),
        ([s(Resource="arn:aws:s3:::a*")], "apigateway:PUT", "arn:aws:s3:x::a", {}, "deny"),
        ([s(NotResource="arn:aws:s3:::a")], "apigateway:PUT", "arn:aws:s3:::a", {}, "deny"),
        ([s(Condition={"StringLike": {f"aws:RequestTag/{TIE}": "arn:*:secret:api-keys/*"}})], "apigateway:PUT", "a", tagged, "allow"),
        ([s(Condition={"StringLike": {f"aws:RequestTag/{TIE}": "arn:*:secret:other/*"}})], "apigateway:PUT", "a", tagged, "deny"),
        ([s(Condition={"StringLike": {f"aws:RequestTag/{TIE}": "*"}})], "apigateway:PUT", "a", {}, "deny"),
        ([s(Condition={"StringLikeIfExists": {f"aws:RequestTag/{TIE}": "x"}})], "apigateway:PUT", "a", {}, "allow"),
        ([s(Condition={"StringNotLike": {f"aws:RequestTag/{TIE}": "x"}})], "apigateway:PUT", "a", {}, "allow"),
        ([s(Condition={"StringNotEquals": {"k": ["a", "b"]}})], "apigateway:PUT", "a", {"k": "b"}, "deny"),
        ([s(Condition={"StringEquals": {"k": ["a", "b"]}})], "apigateway:PUT", "a", {"k": "b"}, "allow"),
        ([s(Condition={"StringEquals": {"k": "a", "j": "b"}})], "apigateway:PUT", "a", {"k": "a", "j": "c"}, "deny"),
        ([s(Condition={"Null": {"k": "true"}})], "apigateway:PUT", "a", {}, "allow"),
        ([s(Condition={"Null": {"k": "true"}})], "apigateway:PUT", "a", {"k": "v"}, "deny"),
        ([s(Condition={"Null": {"k": "false"}})], "apigateway:PUT", "a", {}, "deny"),
        ([s(Condition={"ForAllValues:StringEquals": {"aws:TagKeys": [TIE]}})], "apigateway:PUT", "a", {}, "allow"),
        ([s(Condition={"ForAllValues:StringEquals": {"aws:TagKeys": [TIE]}})], "apigateway:PUT", "a", tag_context({TIE: "x", "P": "y"}), "deny"),
        ([s(Condition={"ForAllValues:StringEquals": {"aws:TagKeys": [TIE]}})], "apigateway:PUT", "a", tagged, "allow"),
        ([s(Condition={"ForAnyValue:StringEquals": {"aws:TagKeys": ["P"]}})], "apigateway:PUT", "a", {}, "deny"),
        ([s(Condition={"ForAnyValue:StringEquals": {"aws:TagKeys": ["P"]}})], "apigateway:PUT", "a", tag_context({TIE: "x", "P": "y"}), "allow"),
        ([s(Condition={"ForAnyValue:StringNotEquals": {"aws:TagKeys": [TIE]}})], "apigateway:PUT", "a", tag_context({TIE: "x", "P": "y"}), "allow"),
        ([s(Condition={"ArnLike": {"kms:EncryptionContext:SecretARN": "arn:aws:secretsmanager:*:1:secret:api-keys/*"}})],
         "apigateway:PUT", "a", {"kms:EncryptionContext:SecretARN": "arn:aws:secretsmanager:r:1:secret:other/x"}, "deny"),
    ]
    for i, (sts, action, resource, ctx, expected) in enumerate(checks):
        got = decide(sts, action, resource, ctx)[0]
        assert got == expected, f"evaluator check {i}: {got}, expected {expected}: {sts} {action} {resource} {ctx}"
    # The finding of issue 18 item 10, in the evaluator's terms: the statement this branch
    # replaced required aws:ResourceTag to be null, and the tags resource has none, so it tied a
    # key that another secret's tie already names (its guard was vacuous), while it refused the
    # tags CreateApiKey copies from the secret.
    before = {"Effect": "Allow", "Action": "apigateway:PUT", "Resource": tags_of(apigw("/apikeys/*")),
              "Condition": {"ForAllValues:StringEquals": {"aws:TagKeys": [TIE]},
                            "StringLike": {f"aws:RequestTag/{TIE}": SECRET},
                            "Null": {f"aws:ResourceTag/{TIE}": "true"}}}
    assert authorize([before], requests_for("TagResource", key="foreign", tags={TIE: SECRET}))[0] == "allow"
    assert f"apigateway:PUT on {tags_of(apigw('/apikeys/newkey001'))}" in \
        authorize([before], requests_for("CreateApiKey", tags=dict(COPIED, **{TIE: SECRET})))[1]
    try:
        condition_holds("StringEquals", "aws:TagKeys", "x", {"aws:TagKeys": ["x"]})
        raise AssertionError("a single-valued operator on a multivalued key went unnoticed")
    except ValueError:
        pass
    assert authorize([s()], [("apigateway:PUT", "a", {}), ("apigateway:POST", "a", {})])[0] == "deny", \
        "a call allowed though one of its requests is refused"

    def mutated(change):
        """The evaluator's failures on the template with one change to the role's or an
        operator policy's statements; None when the change found nothing to change (the template
        no longer has that statement or condition)."""
        t = copy.deepcopy(template)
        resources = t.get("Resources") or {}
        role = (resources.get("RotatorRole") or {}).get("Properties") or {}
        docs = [policy.get("PolicyDocument") or {} for policy in role.get("Policies", [])]
        docs += [(resources.get(name) or {}).get("Properties", {}).get("PolicyDocument") or {}
                 for name in (READER, OPERATOR)]
        changed = False
        for doc in docs:
            for st in as_list(doc.get("Statement", [])):
                if isinstance(st, dict):
                    changed = bool(change(st)) or changed
        return evaluate(t, root)[1] if changed else None

    def drop_condition(sid, key=None):
        def change(st):
            cond = st.get("Condition") or {}
            if st.get("Sid") != sid or (key and key not in cond) or not cond:
                return False
            cond.pop(key) if key else st.pop("Condition")
            return True
        return change

    def update(sid, **fields):
        return lambda st: st.get("Sid") == sid and (st.update(fields) or True)

    def replace_tag_statements(st):
        """The statements before this branch: PUT on tags with the tie alone onto a key whose
        aws:ResourceTag (absent on the tags resource) is null, and no PATCH for TagResource."""
        if st.get("Sid") == "TagKeysWithTie":
            st["Condition"]["ForAllValues:StringEquals"] = {"aws:TagKeys": [TIE]}
            st["Condition"]["Null"] = {f"aws:ResourceTag/{TIE}": "true"}
            return True
        if st.get("Sid") == "TieUntiedKeys":
            st["Action"] = "apigateway:GET"
            st["Resource"] = "arn:aws:none:::nothing"
            return True
        return False

    expectations = [
        (drop_condition("EnableDisableDeleteOwnKeys"), "UpdateApiKey {'key': 'foreign'"),
        (drop_condition("EnableDisableDeleteOwnKeys", "Null"), "TagResource {'key': 'sibling'"),
        (drop_condition("TieUntiedKeys", "Null"), "TagResource {'key': 'foreign'"),
        (drop_condition("TieUntiedKeys", "ForAllValues:StringEquals"), "'Extra': 'x'"),
        (drop_condition("TagKeysWithTie"), "TagResource {'key': 'owned', 'tags': {'Project': 'moved'}"),
        (drop_condition("CreateTiedKeys"), "CreateApiKey {'tags': {}"),
        (update("TagKeysWithTie", Action="apigateway:GET"), "CreateApiKey"),
        (update("DetachKeys", Resource="*"), "DeleteUsagePlanKey {'key': 'owned', 'plan': 'zzz999'"),
        (replace_tag_statements, "CreateApiKey {'tags': {'Project': 'p1', 'CostCategory': 'partners', "),
        (replace_tag_statements, "[defaults/report] function TagResource {'key': 'owned-untied', 'tags': {'api-key-rotator"),
        # Issue 19: the schedule tags. Without the TagKeys condition the role could rewrite a
        # secret's settings; without Null, a request with no keys passes ForAllValues.
        (drop_condition("WriteOwnRetirementSchedule", "ForAllValues:StringLike"),
         "function secretsmanager:TagResource {'tags': {'KeyName': 'x'}"),
        (drop_condition("WriteOwnRetirementSchedule", "ForAllValues:StringLike"),
         "function secretsmanager:UntagResource {'tags': ['GracePeriod']"),
        (drop_condition("WriteOwnRetirementSchedule", "Null"), "function secretsmanager:TagResource {'tags': {}"),
        (update("WriteOwnRetirementSchedule", Condition={"ForAllValues:StringLike": {"aws:TagKeys": "api-key-rotator:*"},
                                                         "Null": {"aws:TagKeys": "false"}}),
         f"function secretsmanager:TagResource {{'tags': {{'{TIE}': 'x'}}"),
        (update("WriteOwnRetirementSchedule", Resource="*"), f"function secretsmanager:TagResource {{'secret': '{OUTSIDE}'"),
        (update("FindDueRetirements", Action="secretsmanager:ListSecretVersionIds"), "function ListSecrets"),
        (drop_condition("WriteRetirementSchedule", "ForAllValues:StringLike"),
         "operator secretsmanager:UntagResource {'tags': ['UsagePlan']"),
        (drop_condition("WriteRetirementSchedule", "ForAllValues:StringLike"),
         "operator secretsmanager:TagResource {'tags': {'OldKeyAction': 'x'}"),
        (drop_condition("RotateTheseSecretsNow"), f"operator RotateSecret {{'rotation_lambda': '{OTHER_FUNCTION}'"),
        (update("InvokeTheRotationFunction", Resource="*"), f"operator RotateSecret {{'function': '{OTHER_FUNCTION}'"),
        (update("RotateTheseSecretsNow", Resource="*"), f"operator RotateSecret {{'secret': '{OUTSIDE}'"),
    ]
    problems_found = []
    for change, expected in expectations:
        found = mutated(change)
        if found is None:
            problems_found.append(f"evaluator self-check: the statement it breaks to catch {expected!r} is gone; "
                                  "update evaluator_self_check")
        elif not any(expected in f for f in found):
            raise AssertionError(f"the evaluator missed a broken policy ({expected}): {found[:5]}")
    return len(checks) + 2 + len(expectations) - len(problems_found), problems_found


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
            {"Sid": "Tie", "Effect": "Allow", "Action": "apigateway:PATCH", "Resource": "arn:aws:apigateway:r::/apikeys/*",
             "Condition": {"Null": {f"aws:ResourceTag/{TIE}": "true"}, "StringLike": {f"aws:RequestTag/{TIE}": "*"}}},
            {"Sid": "Own", "Effect": "Allow", "Action": "apigateway:PATCH", "Resource": "arn:aws:apigateway:r::/apikeys/*",
             "Condition": {"StringLike": {f"aws:ResourceTag/{TIE}": prefix}}},
        ]}}]}}}}
    found = ownership_problems(loose)
    expected = ["Create: CreateApiKey without", "Retire: apigateway:DELETE on API keys without",
                "Tag: tags of resources other than API keys", "Tie: tying a key to no secret",
                "Tie: tying may add tags", "Own: apigateway:PATCH on tied keys may set the tie"]
    missed = [e for e in expected if not any(e in f for f in found)]
    assert not missed and len(found) == len(expected), f"the ownership check missed {missed}: {found}"
    retire = {"ForAllValues:StringLike": {"aws:TagKeys": RETIRE_TAGS}, "Null": {"aws:TagKeys": "false"}}
    tagging = {"Resources": {"R": {"Type": "AWS::IAM::Role", "Properties": {"Policies": [{
        "PolicyName": "p", "PolicyDocument": {"Statement": [
            {"Sid": "Ok", "Effect": "Allow", "Action": "secretsmanager:TagResource", "Resource": prefix, "Condition": retire},
            {"Sid": "NoKeys", "Effect": "Allow", "Action": "secretsmanager:TagResource", "Resource": prefix},
            {"Sid": "Wide", "Effect": "Allow", "Action": "secretsmanager:UntagResource", "Resource": prefix,
             "Condition": {"ForAllValues:StringLike": {"aws:TagKeys": "api-key-rotator:*"}, "Null": {"aws:TagKeys": "false"}}},
            {"Sid": "NoNull", "Effect": "Allow", "Action": "secretsmanager:UntagResource", "Resource": prefix,
             "Condition": {"ForAllValues:StringLike": {"aws:TagKeys": RETIRE_TAGS}}},
            {"Sid": "Anywhere", "Effect": "Allow", "Action": ["secretsmanager:TagResource"], "Resource": "*", "Condition": retire},
        ]}}]}}}}
    found = schedule_tag_problems(tagging)
    expected = ["NoKeys: secretsmanager:TagResource without ForAllValues", "NoKeys: secretsmanager:TagResource without Null",
                "Wide: secretsmanager:UntagResource without ForAllValues", "NoNull: secretsmanager:UntagResource without Null",
                "Anywhere: secretsmanager:TagResource on secrets outside"]
    missed = [e for e in expected if not any(e in f for f in found)]
    assert not missed and len(found) == len(expected), f"the schedule tag check missed {missed}: {found}"
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
                "writes beyond cleanup, rollback and revoke: ['secretsmanager:PutSecretValue']",
                "secretsmanager:RotateSecret missing", "lambda:InvokeFunction missing",
                "secretsmanager:TagResource missing", "secretsmanager:UntagResource missing"]
    missed = [e for e in expected if not any(e in f for f in found)]
    assert not missed, f"the operator policy check missed {missed}: {found}"


def main(path):
    self_check()
    template, matches = decode(path)
    if template is None:
        print(f"cannot read {path}: {matches}")
        return 1
    root = Path(__file__).resolve().parent.parent
    count, found = problems(template)
    found += ownership_problems(template)
    found += schedule_tag_problems(template)
    found += operator_policy_problems(template)
    calls, failed_calls, limits = evaluate(template, root)
    # Breaking the template further proves nothing while its own verdicts fail: a broken
    # statement's expected failure may be drowned, or already there.
    self_checks = 0
    if not failed_calls:
        self_checks, found_self = evaluator_self_check(template, root)
        found += found_self
    for f in found + failed_calls:
        print("FAILED:", f)
    if count == 0:
        print("no IAM statement found")
        return 1
    print(f"IAM statements in {path}:")
    print(f"policy: {count - len(found)} passed, {len(found)} failed")
    print(f"evaluator: {self_checks} self-checks passed (semantics, broken policies caught)")
    print(f"calls: {calls - len(failed_calls)} of {calls} verdicts as expected "
          f"({len(PARAMETER_SETS)} parameter sets x 2 TagResource models x {len(PRINCIPALS)} principals)")
    for limit, names in sorted(limits.items()):
        print(f"  allowed, guarded by the code, not IAM ({', '.join(sorted(names))}): {LIMITS[limit]}")
    return 1 if found or failed_calls else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "template.yaml"))
