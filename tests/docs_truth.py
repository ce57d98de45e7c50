"""The docs' reference lists, kept in step with the code and the template (issue 21).

Reads, from the source and the template, never from a list kept here:
- every environment variable the code reads: string literals passed to `lookup`, `var`,
  `var_os`, to any function or closure that hands its argument on to one of them (`env_millis`,
  a `pick` closure, the next helper someone writes), and clap's `env = "..."`; test modules and
  comments do not count;
- every environment variable the template sets on the function;
- every template parameter;
- every finding code (the `codes!` table of src/finding.rs);
- every exit code of the operator commands (`EXIT_*` constants and literal exit codes in src/cli).

and fails, naming each one, when the doc that must list it does not:

| what | must be listed in |
|---|---|
| environment variables the code reads | docs/contract.md, "Function environment": a row's first cell |
| parameters | docs/deploy.md, "Parameters": a row's first cell |
| environment variables the template sets | docs/deploy.md, "Parameters" (the parameter that sets it) |
| finding codes | docs/operator-commands.md, "Finding codes": a row's first cell |
| exit codes | docs/operator-commands.md, "Output and exit codes": a row's first cell |

It also fails on the reverse, a row naming something the code or the template no longer has; on
an environment variable the template sets that the code never reads or that no parameter sets (a
value hard-coded in the template is one a user cannot change, whatever the docs say); and when
the template's `LogLevel` no longer does what docs/deploy.md and docs/metrics.md say: set
Lambda's ApplicationLogLevel so that every line the function writes at that level arrives, and
never above INFO, so that the metrics lines arrive.

Before it reads the real files it proves, on inputs built to be wrong, that it does fail: the
extractor on a synthetic source, and the check on copies of the real docs with each item removed
in turn and a stale row added.

    .local/tools-venv/bin/python tests/docs_truth.py
"""

import pathlib
import re
import sys

from cfnlint.decode import decode

ROOT = pathlib.Path(__file__).resolve().parent.parent

ENV_NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")
# The functions that read the environment by a name they are given; anything that passes its own
# argument on to one of them joins the set (see env_readers).
BASE_READERS = {"lookup", "var", "var_os"}


# --- Reading Rust source -------------------------------------------------------------------------

def mask(src):
    """`src` with comments blanked, and a copy with string and char literals blanked too (same
    length, newlines kept), so that braces and parentheses can be matched on the second."""
    code = list(src)
    structure = list(src)
    i, n = 0, len(src)

    def blank(buf, a, b):
        for k in range(a, b):
            if buf[k] != "\n":
                buf[k] = " "

    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            blank(code, i, j)
            blank(structure, i, j)
            i = j
        elif src.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            blank(code, i, j)
            blank(structure, i, j)
            i = j
        elif c == "r" and re.match(r'r#*"', src[i:i + 260]) and not (i and (src[i - 1].isalnum() or src[i - 1] == "_")):
            hashes = re.match(r'r(#*)"', src[i:]).group(1)
            end = src.find('"' + hashes, i + 2 + len(hashes))
            end = n if end < 0 else end + 1 + len(hashes)
            blank(structure, i + 1, end)
            i = end
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            blank(structure, i + 1, j)
            i = j + 1
        elif c == "'":
            m = re.match(r"'(\\.[^']*|[^\\'])'", src[i:i + 12])
            if m:
                blank(structure, i + 1, i + len(m.group(0)) - 1)
                i += len(m.group(0))
            else:
                i += 1  # a lifetime
        else:
            i += 1
    return "".join(code), "".join(structure)


def closing(structure, open_at):
    """The index just past the bracket that closes the one at `open_at`."""
    pairs = {"(": ")", "{": "}", "[": "]"}
    stack = []
    for k in range(open_at, len(structure)):
        ch = structure[k]
        if ch in pairs:
            stack.append(pairs[ch])
        elif ch in ")}]":
            if not stack or stack.pop() != ch:
                raise ValueError(f"unbalanced {ch!r} at {k}")
            if not stack:
                return k + 1
    raise ValueError(f"no closing bracket for {open_at}")


def without_tests(code, structure):
    """Blank every `#[cfg(test)]` item (a test module, a test-only function)."""
    code, structure = list(code), list(structure)
    for m in re.finditer(r"#\s*\[\s*cfg\s*\(\s*test\s*\)\s*\]", "".join(structure)):
        brace = "".join(structure).find("{", m.end())
        semi = "".join(structure).find(";", m.end())
        if brace < 0 or (0 <= semi < brace):
            end = semi + 1  # `#[cfg(test)] mod tests;` or a `use`
        else:
            end = closing(structure, brace)
        for k in range(m.start(), end):
            if code[k] != "\n":
                code[k] = structure[k] = " "
    return "".join(code), "".join(structure)


def arguments(code, structure, open_at):
    """The top-level arguments of the call whose `(` is at `open_at`, as source text."""
    end = closing(structure, open_at)
    args, start, depth = [], open_at + 1, 0
    for k in range(open_at + 1, end - 1):
        ch = structure[k]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            args.append(code[start:k].strip())
            start = k + 1
    last = code[start:end - 1].strip()
    if last:
        args.append(last)
    return args


CALL = re.compile(r"(?<![\w!])([a-z_][a-z0-9_]*)\s*\(")


def calls(code, structure):
    """(callee, [arguments]) for every call `name(...)` or `.name(...)` (not macros)."""
    for m in CALL.finditer(structure):
        name = m.group(1)
        if name in ("fn", "if", "while", "match", "for", "return", "in", "as", "move", "let"):
            continue
        yield name, m.start(), arguments(code, structure, m.end() - 1)


def parameter_names(text):
    """The names bound by a parameter list (`a: &str, mut b: u8`, `&self` left out)."""
    names = []
    for part in text.split(","):
        m = re.match(r"\s*(?:mut\s+)?([a-z_][a-z0-9_]*)\s*:", part)
        if m:
            names.append(m.group(1))
    return names


def definitions(code, structure):
    """(name, parameters, body) for every `fn name(...) {...}` and `let name = |...| ...`."""
    for m in re.finditer(r"\bfn\s+([a-z_][a-z0-9_]*)\b", structure):
        brace, semi = structure.find("{", m.end()), structure.find(";", m.end())
        if brace < 0 or (0 <= semi < brace):
            continue  # a trait method without a body
        paren = structure.find("(", m.end())
        params = parameter_names(code[paren + 1:closing(structure, paren) - 1]) if 0 <= paren < brace else []
        yield m.group(1), params, code[brace:closing(structure, brace)]
    for m in re.finditer(r"\blet\s+([a-z_][a-z0-9_]*)\s*(?::[^=;]*)?=\s*(?:move\s*)?\|", structure):
        bar = structure.find("|", m.end())
        params = parameter_names(code[m.end():bar])
        after = bar + 1
        while after < len(structure) and structure[after] in " \n":
            after += 1
        if structure[after] == "{":
            yield m.group(1), params, code[after:closing(structure, after)]
        else:
            depth, k = 0, after
            while k < len(structure) and not (depth == 0 and structure[k] in ";,)"):
                depth += structure[k] in "([{"
                depth -= structure[k] in ")]}"
                k += 1
            yield m.group(1), params, code[after:k]


def literal(arg):
    m = re.fullmatch(r'&?\s*"([^"\\]*)"', arg)
    return m.group(1) if m else None


def env_readers(sources):
    """The base readers, and every function or closure that hands one of its own parameters to a
    reader as an argument (`env_millis(lookup, name, ..)` calling `lookup(name)`), to a fixpoint."""
    readers = set(BASE_READERS)
    defs = []
    for code, structure in sources:
        for name, params, body in definitions(code, structure):
            body_code, body_structure = mask(body)
            defs.append((name, set(params), list(calls(body_code, body_structure))))

    def passes_on(arg, params):
        m = re.match(r"&?\s*([a-z_][a-z0-9_]*)\b", arg)
        return bool(m) and m.group(1) in params

    changed = True
    while changed:
        changed = False
        for name, params, inner in defs:
            if name not in readers and any(
                    callee in readers and any(passes_on(a, params) for a in args) for callee, _, args in inner):
                readers.add(name)
                changed = True
    return readers


def shown(path):
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return path.name


def rust_sources(files):
    out = []
    for path in files:
        code, structure = mask(path.read_text())
        out.append((path, *without_tests(code, structure)))
    return out


def env_vars_read(files):
    """{name: first place it is read} for every environment variable the code reads."""
    sources = rust_sources(files)
    readers = env_readers([(c, s) for _, c, s in sources])
    found = {}
    for path, code, structure in sources:
        for callee, at, args in calls(code, structure):
            if callee not in readers:
                continue
            for arg in args:
                name = literal(arg)
                if name and ENV_NAME.fullmatch(name):
                    found.setdefault(name, f"{shown(path)}:{code.count(chr(10), 0, at) + 1}, {callee}")
        for m in re.finditer(r'\benv\s*=\s*"([A-Z][A-Z0-9_]*)"', code):
            found.setdefault(m.group(1), f"{shown(path)}:{code.count(chr(10), 0, m.start()) + 1}, clap's env")
    return found


def finding_codes(path):
    code, structure = mask(path.read_text())
    code, structure = without_tests(code, structure)
    m = re.search(r"\bcodes!\s*\{", structure)
    if not m:
        return []
    block = code[m.end():closing(structure, m.end() - 1) - 1]
    return re.findall(r'\b[A-Z]\w*\s*=\s*"([a-z][a-z0-9-]*)"\s*,\s*\w+\s*;', block)


def exit_codes(files):
    """{code: where} for every exit code the operator commands can return."""
    found = {}
    for path in files:
        code, structure = mask(path.read_text())
        code, _ = without_tests(code, structure)
        for m in re.finditer(r"\bconst\s+(EXIT_\w+)\s*:\s*u8\s*=\s*(\d+)\s*;", code):
            found.setdefault(int(m.group(2)), m.group(1))
        for m in re.finditer(r"(?:ExitCode::from|process::exit|\bexit)\s*\(\s*(\d+)\s*\)", code):
            found.setdefault(int(m.group(1)), f"{shown(path)}: {m.group(0)}")
    return found


# --- Reading the template ------------------------------------------------------------------------

def load_template(path):
    template, matches = decode(str(path))
    if matches or template is None:
        raise SystemExit(f"cannot read {path}: {matches}")
    return template


def function_environment(template):
    """{variable: value} the template sets on its functions."""
    out = {}
    for res in (template.get("Resources") or {}).values():
        if res.get("Type") in ("AWS::Serverless::Function", "AWS::Lambda::Function"):
            env = ((res.get("Properties") or {}).get("Environment") or {}).get("Variables") or {}
            out.update(env)
    return out


LAMBDA_LEVELS = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"]


def log_level_problems(template):
    """What docs/deploy.md ("`LogLevel`: two filters") and docs/metrics.md say of the template:
    Lambda's ApplicationLogLevel follows the function's level, so that no line the function
    writes is dropped, and is never above INFO, so that the metrics lines (no level: INFO) pass."""
    problems = []
    mappings = template.get("Mappings") or {}
    params = template.get("Parameters") or {}
    for name, res in (template.get("Resources") or {}).items():
        if res.get("Type") not in ("AWS::Serverless::Function", "AWS::Lambda::Function"):
            continue
        props = res.get("Properties") or {}
        env = (props.get("Environment") or {}).get("Variables") or {}
        level = (props.get("LoggingConfig") or {}).get("ApplicationLogLevel")
        fn_level = env.get("AWS_LAMBDA_LOG_LEVEL")
        if not (isinstance(fn_level, dict) and "Ref" in fn_level):
            continue  # the function's level is not a parameter: nothing is claimed
        param = fn_level["Ref"]
        if level is None:
            problems.append(f"template.yaml, {name}: LoggingConfig has no ApplicationLogLevel, so Lambda drops "
                            f"the DEBUG and TRACE lines {param} asks for")
            continue
        for value in (params.get(param) or {}).get("AllowedValues") or []:
            if isinstance(level, dict) and "Fn::FindInMap" in level:
                table, key, field = level["Fn::FindInMap"]
                if key != {"Ref": param}:
                    problems.append(f"template.yaml, {name}: ApplicationLogLevel is not looked up by {param}")
                    break
                mapped = ((mappings.get(table) or {}).get(value) or {}).get(field)
            elif level == {"Ref": param}:
                mapped = value
            else:
                mapped = level
            if mapped not in LAMBDA_LEVELS:
                problems.append(f"template.yaml, {name}: {param}={value} gives ApplicationLogLevel {mapped!r}, not one of Lambda's levels")
                continue
            if LAMBDA_LEVELS.index(mapped) > LAMBDA_LEVELS.index("INFO"):
                problems.append(f"template.yaml, {name}: {param}={value} sets ApplicationLogLevel {mapped}, above INFO: "
                                "Lambda would drop the metrics lines")
            if value in LAMBDA_LEVELS and LAMBDA_LEVELS.index(mapped) > LAMBDA_LEVELS.index(value):
                problems.append(f"template.yaml, {name}: {param}={value} sets ApplicationLogLevel {mapped}: "
                                f"Lambda would drop the {value} lines the function writes")
    return problems


# --- Reading the docs ----------------------------------------------------------------------------

def section(text, heading):
    """The lines under `## heading` up to the next heading of level 1 or 2 (None if absent);
    a `#` line inside a fenced code block is not a heading."""
    lines, fenced, start = text.splitlines(), False, None
    for i, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif fenced:
            continue
        elif start is None and re.fullmatch(r"##\s+" + re.escape(heading) + r"\s*", line):
            start = i + 1
        elif start is not None and re.match(r"#{1,2}\s", line):
            return "\n".join(lines[start:i])
    return None if start is None else "\n".join(lines[start:])


def first_cells(text):
    """The first cell of every table row, header and separator rows left out."""
    cells = []
    rows = [line for line in text.splitlines() if line.lstrip().startswith("|")]
    for k, row in enumerate(rows):
        cell = row.strip().strip("|").split("|")[0].strip()
        if re.fullmatch(r":?-+:?", cell) or (k + 1 < len(rows) and re.match(r"\s*\|\s*:?-+", rows[k + 1])):
            continue
        cells.append(cell)
    return cells


def ticked(text):
    return re.findall(r"`([^`]+)`", text)


# --- The check -----------------------------------------------------------------------------------

def check(facts, docs):
    """Every problem, one line each. `facts`: what the code and template hold; `docs`: {name: text}."""
    problems = []

    def listed(doc, heading, what):
        text = docs[doc]
        part = section(text, heading)
        if part is None:
            problems.append(f"{doc}: no section '## {heading}', where {what} are listed")
            return None
        return part

    env = listed("docs/contract.md", "Function environment", "the environment variables")
    if env is not None:
        names = {t for cell in first_cells(env) for t in ticked(cell)}
        for name, where in sorted(facts["env_read"].items()):
            if name not in names:
                problems.append(f"docs/contract.md, Function environment: no row for {name}, which the code reads ({where})")
        for name in sorted(names - set(facts["env_read"])):
            if ENV_NAME.fullmatch(name):
                problems.append(f"docs/contract.md, Function environment: a row for {name}, which the code does not read")

    params = listed("docs/deploy.md", "Parameters", "the template's parameters")
    if params is not None:
        names = {t for cell in first_cells(params) for t in ticked(cell)}
        for name in sorted(facts["parameters"]):
            if name not in names:
                problems.append(f"docs/deploy.md, Parameters: no row for the template parameter {name}")
        for name in sorted(names - set(facts["parameters"])):
            problems.append(f"docs/deploy.md, Parameters: a row for {name}, which is not a template parameter")
        mentioned = set(ticked(params))
        for name in sorted(facts["env_set"]):
            if name not in mentioned:
                problems.append(f"docs/deploy.md, Parameters: the template sets {name} on the function, and no row says which parameter sets it")

    problems += facts["log_level_problems"]
    for name, value in sorted(facts["env_set"].items()):
        if name not in facts["env_read"]:
            problems.append(f"template.yaml: sets {name} on the function, which the code never reads")
        if not (isinstance(value, dict) and set(value) & {"Ref", "Fn::FindInMap", "Fn::If", "Fn::Sub", "Fn::Join"}):
            problems.append(f"template.yaml: hard-codes {name} ({value!r}): make it a parameter, so that a user can change it")

    codes = listed("docs/operator-commands.md", "Finding codes", "the finding codes")
    if codes is not None:
        names = {t for cell in first_cells(codes) for t in ticked(cell)}
        for name in facts["finding_codes"]:
            if name not in names:
                problems.append(f"docs/operator-commands.md, Finding codes: no row for {name} (src/finding.rs)")
        for name in sorted(names - set(facts["finding_codes"])):
            problems.append(f"docs/operator-commands.md, Finding codes: a row for {name}, which src/finding.rs does not have")

    exits = listed("docs/operator-commands.md", "Output and exit codes", "the exit codes")
    if exits is not None:
        numbers = {int(c) for c in first_cells(exits) if c.isdigit()}
        for number, where in sorted(facts["exit_codes"].items()):
            if number not in numbers:
                problems.append(f"docs/operator-commands.md, Output and exit codes: no row for exit code {number} ({where})")
        for number in sorted(numbers - set(facts["exit_codes"])):
            problems.append(f"docs/operator-commands.md, Output and exit codes: a row for exit code {number}, which src/cli does not return")
    return problems


DOCS = ("docs/contract.md", "docs/deploy.md", "docs/operator-commands.md")


def read_facts(root):
    src = sorted((root / "src").rglob("*.rs"))
    template = load_template(root / "template.yaml")
    facts = {
        "env_read": env_vars_read(src),
        "env_set": function_environment(template),
        "parameters": list((template.get("Parameters") or {})),
        "finding_codes": finding_codes(root / "src" / "finding.rs"),
        "exit_codes": exit_codes(sorted((root / "src" / "cli").rglob("*.rs"))),
        "log_level_problems": log_level_problems(template),
        "template": template,
    }
    empty = [k for k in ("env_read", "parameters", "finding_codes", "exit_codes") if not facts[k]]
    if empty:
        raise SystemExit(f"docs_truth: found no {', '.join(empty)}: the extractor no longer matches the code; fix it")
    return facts


# --- Proof that it fails -------------------------------------------------------------------------

SYNTHETIC = r'''
use std::env;
// lookup("IN_A_COMMENT") is not read
/// Doc: `lookup("IN_A_DOC_COMMENT")`.
pub fn env_millis(lookup: &dyn Fn(&str) -> Option<String>, name: &str, d: u64) -> u64 {
    lookup(name).and_then(|v| v.parse().ok()).unwrap_or(d)
}
fn bounded<'a>(lookup: &'a dyn Fn(&str) -> Option<String>, name: &'a str) -> u64 {
    env_millis(lookup, name, 1) + u64::from(b'x')
}
fn not_a_reader(id: &str) -> Option<String> {
    let other = id.to_owned();
    lookup(&other)
}
pub fn read(lookup: &dyn Fn(&str) -> Option<String>) {
    let pick = |name: &str, default: &str| {
        lookup(name).unwrap_or_else(|| default.to_owned())
    };
    let _ = lookup("PLAIN_LOOKUP");
    let _ = env_millis(lookup, "VIA_HELPER_MS", 5);
    let _ = bounded(lookup, "VIA_TWO_HELPERS_MS");
    let _ = pick("VIA_CLOSURE", "x");
    let _ = env::var("STD_VAR").ok();
    let _ = std::env::var_os("STD_VAR_OS");
    let _ = key_type("NOT_AN_ENV");
    let _ = not_a_reader("NOT_PASSED_ON");
    let _ = lookup("not_upper");
    let _ = format!("lookup(\"IN_A_STRING\") {}", r#"lookup("IN_A_RAW_STRING")"#);
    let _ = env!("COMPILE_TIME");
}
#[derive(clap::Args)]
struct A {
    #[arg(long, env = "CLAP_ENV")]
    a: Option<String>,
}
#[cfg(test)]
mod tests {
    #[test]
    fn t() { let _ = super::lookup("IN_A_TEST"); let x = '{'; }
}
'''
SYNTHETIC_EXPECTED = {"PLAIN_LOOKUP", "VIA_HELPER_MS", "VIA_TWO_HELPERS_MS", "VIA_CLOSURE", "STD_VAR",
                      "STD_VAR_OS", "CLAP_ENV"}


def extractor_self_check(tmp):
    """The extractors on synthetic sources: what they must find, and what they must not."""
    path = tmp / "synthetic.rs"
    path.write_text(SYNTHETIC)
    got = set(env_vars_read([path]))
    assert got == SYNTHETIC_EXPECTED, f"extractor: got {sorted(got)}, expected {sorted(SYNTHETIC_EXPECTED)}"
    exits = tmp / "exits.rs"
    exits.write_text("pub const EXIT_A: u8 = 0;\npub const EXIT_B: u8 = 7;\nfn f() -> ExitCode { ExitCode::from(9) }\n"
                     "#[cfg(test)]\nmod tests { fn g() { std::process::exit(42) } }\n")
    got = set(exit_codes([exits]))
    assert got == {0, 7, 9}, f"exit codes extractor: got {sorted(got)}"
    doc = "## A\n| name | meaning |\n|---|---|\n| `K`, `L` | x `N` |\n```sh\n# a comment\n```\n| `M` | y |\n## B\n| `O` |\n"
    got = {t for cell in first_cells(section(doc, "A")) for t in ticked(cell)}
    assert got == {"K", "L", "M"}, f"doc reader: got {sorted(got)}"
    assert section(doc, "C") is None, "doc reader: found a section that is not there"


def self_check(facts, docs):
    """The check on the real docs with each item removed in turn, a stale row added, and new
    items in the code: each must be reported, by name."""
    assert check(facts, docs) == [], "self-check needs the real docs to pass first"
    caught = 0

    def expect(mutated_docs, mutated_facts, needle, why):
        nonlocal caught
        found = check(mutated_facts, mutated_docs)
        assert any(needle in p for p in found), f"self-check: {why} not reported (got {found})"
        caught += 1

    def without(doc, token):
        out = dict(docs)
        out[doc] = docs[doc].replace(f"`{token}`", "`(removed)`")
        return out

    for name in facts["env_read"]:
        expect(without("docs/contract.md", name), facts, f"no row for {name},", f"{name} removed from contract.md")
    for name in facts["parameters"]:
        expect(without("docs/deploy.md", name), facts, f"parameter {name}", f"parameter {name} removed from deploy.md")
    for name in facts["env_set"]:
        expect(without("docs/deploy.md", name), facts, f"sets {name} on the function, and no row",
               f"{name} removed from deploy.md")
    for name in facts["finding_codes"]:
        expect(without("docs/operator-commands.md", name), facts, f"no row for {name} ", f"{name} removed")
    for number in facts["exit_codes"]:
        out = dict(docs)
        out["docs/operator-commands.md"] = re.sub(rf"(?m)^\|\s*{number}\s*\|.*\n", "", docs["docs/operator-commands.md"])
        expect(out, facts, f"no row for exit code {number} ", f"exit code {number} removed")

    # Something new in the code, not yet in the docs; something gone from the code, still listed.
    expect(docs, {**facts, "env_read": {**facts["env_read"], "ROTATOR_NEW_SETTING_MS": "x.rs:1"}},
           "no row for ROTATOR_NEW_SETTING_MS", "a new environment variable")
    expect(docs, {**facts, "finding_codes": facts["finding_codes"] + ["brand-new-code"]},
           "no row for brand-new-code", "a new finding code")
    expect(docs, {**facts, "exit_codes": {**facts["exit_codes"], 4: "EXIT_NEW"}},
           "no row for exit code 4", "a new exit code")
    expect(docs, {**facts, "parameters": facts["parameters"] + ["NewParameter"]},
           "parameter NewParameter", "a new parameter")
    stale = dict(docs)
    stale["docs/contract.md"] = docs["docs/contract.md"].replace(
        "## Function environment\n| variable | meaning |\n|---|---|\n",
        "## Function environment\n| variable | meaning |\n|---|---|\n| `GONE_SETTING` | stale |\n")
    expect(stale, facts, "a row for GONE_SETTING", "a stale environment row")
    expect(docs, {**facts, "env_set": {**facts["env_set"], "NEVER_READ": {"Ref": "X"}}},
           "sets NEVER_READ on the function, which the code never reads", "a variable the code never reads")
    name = next(iter(facts["env_set"]))
    expect(docs, {**facts, "env_set": {**facts["env_set"], name: "60000"}},
           f"hard-codes {name}", "a hard-coded environment value")

    # The log-level claims, on templates broken in each way they can be.
    import copy

    def broken(change, needle, why):
        template = copy.deepcopy(facts["template"])
        change(template)
        expect(docs, {**facts, "log_level_problems": log_level_problems(template)}, needle, why)

    def functions(template):
        return [r["Properties"] for r in template["Resources"].values()
                if r.get("Type") in ("AWS::Serverless::Function", "AWS::Lambda::Function")
                and "AWS_LAMBDA_LOG_LEVEL" in ((r.get("Properties") or {}).get("Environment") or {}).get("Variables", {})]

    def set_level(template, level):
        for props in functions(template):
            props["LoggingConfig"]["ApplicationLogLevel"] = level

    def unset_level(template):
        for props in functions(template):
            props["LoggingConfig"].pop("ApplicationLogLevel", None)

    assert functions(facts["template"]), "self-check: no function sets AWS_LAMBDA_LOG_LEVEL from a parameter"
    broken(unset_level, "has no ApplicationLogLevel", "ApplicationLogLevel removed")
    broken(lambda t: set_level(t, {"Ref": "LogLevel"}), "above INFO", "ApplicationLogLevel = LogLevel, WARN included")
    broken(lambda t: set_level(t, "INFO"), "would drop the DEBUG lines", "ApplicationLogLevel fixed at INFO")
    broken(lambda t: set_level(t, "VERBOSE"), "not one of Lambda's levels", "a level Lambda does not have")
    return caught


def main():
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        extractor_self_check(pathlib.Path(tmp))
    facts = read_facts(ROOT)
    docs = {d: (ROOT / d).read_text() for d in DOCS}
    problems = check(facts, docs)
    if problems:
        print("docs_truth: the docs do not say what the code and the template hold:")
        for p in problems:
            print(f"  {p}")
        sys.exit(1)
    caught = self_check(facts, docs)
    print(f"docs_truth: {len(facts['env_read'])} environment variables, {len(facts['parameters'])} parameters, "
          f"{len(facts['env_set'])} variables the template sets, {len(facts['finding_codes'])} finding codes, "
          f"{len(facts['exit_codes'])} exit codes: all documented; LogLevel as documented; "
          f"self-check: {caught} broken docs and templates caught")


if __name__ == "__main__":
    main()
