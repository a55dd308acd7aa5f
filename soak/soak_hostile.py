"""Hostile input against a served project: oversized bodies, deeply nested JSON, invalid
UTF-8, injection in tool arguments, path traversal, cross-tenant access, schemathesis.

Every function returns ``{"tried": n, "through": m, ...}``; ``through`` counts attacks
that got an answer they should not have (a 5xx, a 2xx where a refusal was due, another
tenant's data, a file outside the project, a tool called with the wrong types, a dead
server): it must be 0.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from soakflows import CHAIN_TABLE, GATE_TABLE  # noqa: E402
from soaklib import KEYS, Served, child_env, start_server, stop_server, write_project  # noqa: E402

GUARDED = """
[agents.guarded]
model = "soakflows:guard_model"
tools = ["soakflows:wipe"]
"""
MAX_BODY = 65536
POSTS = [
    "/v1/agents/latent/runs",
    "/v1/chat/completions",
    "/v1/runs/x/approvals",
    "/v1/workflows/chain/runs",
    "/v1/workflows/chain/runs/x/fork",
    "/v1/workflows/gate/approvals/x",
]


class Tally:
    def __init__(self) -> None:
        self.tried = 0
        self.through: list[str] = []

    def check(self, what: str, ok: bool) -> None:
        self.tried += 1
        if not ok:
            self.through.append(what)

    def result(self, **extra: Any) -> dict[str, Any]:
        return {
            "tried": self.tried,
            "through": len(self.through),
            "samples": self.through[:10],
            **extra,
        }


def project(work: Path) -> tuple[Path, dict[str, str]]:
    folder = work / "hostile"
    notes = folder / "notes"
    notes.mkdir(parents=True, exist_ok=True)
    (notes / "hello").write_text("hello note\nsecond line\n")
    (work / "secret.txt").write_text("TOP SECRET\n")
    config = write_project(
        folder,
        f"sqlite:///{folder / 'state.db'}",
        max_body=MAX_BODY,
        max_runs=64,
        extra=GUARDED + CHAIN_TABLE + GATE_TABLE,
    )
    env = child_env(
        SOAK_NOTES=str(notes),
        SOAK_VIOLATIONS=str(folder / "violations"),
        SOAK_EFFECTS=str(folder / "effects"),
    )
    return config, env


def _json_error(r: httpx.Response) -> bool:
    """A 4xx JSON error body with a message (the documented error shape)."""
    if not 400 <= r.status_code < 500:
        return False
    try:
        error = r.json()["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(error.get("message"), str) and bool(error["message"])


def _alive(served: Served) -> bool:
    try:
        return served.alive() and httpx.get(f"{served.url}/healthz", timeout=10).status_code == 200
    except httpx.TransportError:
        return False


def bodies(served: Served, scale: int = 1) -> dict[str, Any]:
    """Oversized bodies, deep nesting, invalid UTF-8 and malformed JSON on every POST route."""
    t = Tally()
    with served.client(timeout=120) as c:
        sizes = [MAX_BODY + 1, 4 * MAX_BODY, 8 * 1024 * 1024]
        for path in POSTS:
            for size in sizes:
                body = b'{"input": "' + b"a" * size + b'"}'
                r = c.post(path, content=body, headers={"content-type": "application/json"})
                t.check(
                    f"{path} {size} B: {r.status_code}", r.status_code == 413 and _json_error(r)
                )

                def chunks(body: bytes = body) -> Iterator[bytes]:
                    for i in range(0, len(body), 65536):
                        yield body[i : i + 65536]

                try:  # no Content-Length: the limit must hold on a chunked body too
                    r = c.post(path, content=chunks(), headers={"content-type": "application/json"})
                    ok = r.status_code == 413 and _json_error(r)
                    what = f"{path} chunked {size} B: {r.status_code}"
                except httpx.TransportError as exc:  # the server may close early: fine
                    ok, what = True, f"{path} chunked {size} B: {exc}"
                t.check(what, ok)
        for depth in [64, 512, 5_000, 30_000][: 2 + 2 * scale]:
            for path in POSTS:
                for body in (
                    b"[" * depth + b"]" * depth,
                    b'{"input": ' + b'{"a": ' * depth + b"1" + b"}" * depth + b"}",
                    b'{"input": "x", "session": ' + b"[" * depth + b"]" * depth + b"}",
                ):
                    if len(body) > MAX_BODY:
                        continue
                    r = c.post(path, content=body, headers={"content-type": "application/json"})
                    t.check(f"{path} depth {depth}: {r.status_code}", _json_error(r))
        bad_utf8 = [
            b'{"input": "\xff\xfe"}',
            b'{"input": "\xc0\xaf"}',  # overlong '/'
            b'{"input": "\xed\xa0\x80"}',  # a UTF-16 surrogate in UTF-8
            b'{"input": "ok", "session": "\xe2\x82"}',  # cut short
            b'\xef\xbb\xbf{"input": "bom"}',
            b'{"input": "\\ud800"}',  # a lone surrogate escape
            b'{"inp\x00ut": "x"}',
        ]
        malformed = [
            b"",
            b"null",
            b"[]",
            b'"input"',
            b"{",
            b'{"input": }',
            b'{"input": 1e999999}',
            b'{"input": NaN}',
            b'{"input": "x", "input": "y"}',
            b'{"input": "x"} trailing',
            b"\x00" * 100,
        ]
        for path in POSTS:
            for body in bad_utf8 + malformed:
                r = c.post(path, content=body, headers={"content-type": "application/json"})
                # A lone-surrogate escape and a duplicate key are valid JSON for some
                # parsers; what must never happen is a 5xx or a non-JSON answer.
                t.check(
                    f"{path} {body[:30]!r}: {r.status_code}",
                    r.status_code < 500
                    and r.headers.get("content-type", "").startswith("application/json"),
                )
        # Wrong content types and methods.
        for path in POSTS:
            r = c.post(
                path,
                content=b"input=x",
                headers={"content-type": "application/x-www-form-urlencoded"},
            )
            t.check(f"{path} form body: {r.status_code}", r.status_code < 500)
            r = c.request("PUT", path, content=b"{}")
            t.check(f"PUT {path}: {r.status_code}", r.status_code in (404, 405))
    t.check("server alive after bodies", _alive(served))
    return t.result()


INJECTIONS: list[Any] = [
    {"name": 123},
    {"name": ["hello"]},
    {"name": {"$gt": ""}},
    {"name": None},
    {"name": True},
    {"name": "hello", "lines": "1; DROP TABLE openheim_kv;--"},
    {"name": "hello", "lines": True},
    {"name": "hello", "lines": 1.5},
    {"name": "hello", "lines": 10**40},
    {"name": "hello", "lines": -(10**40)},
    {"name": "hello", "extra": "field", "__class__": "x"},
    {"name": "hello", "__proto__": {"admin": True}},
    {},
    {"lines": 1},
    {"name": "hello\u0000.txt"},
    {"name": "$(cat /etc/passwd)"},
    {"name": "`id`; rm -rf /"},
    {"name": "hello' OR '1'='1"},
    {"name": "{{7*7}}"},
    {"name": "${jndi:ldap://x}"},
    {"name": "x" * 20000},
    {"name": "\ud83d\ude00" * 100},
    {"name": "../secret.txt"},
    {"name": "../../secret.txt"},
    {"name": "/etc/passwd"},
    {"name": "notes/../../secret.txt"},
    {"name": "..%2f..%2fsecret.txt"},
    {"name": "hello", "lines": {"__import__": "os"}},
    "not an object",
    [1, 2, 3],
    "{broken json",
]


def tool_injection(served: Served, scale: int = 1) -> dict[str, Any]:
    """Hostile tool-call arguments (wrong types, extra keys, injection strings, traversal)."""
    t = Tally()
    violations = served.config.parent / "violations"
    with served.client(timeout=120) as c:
        for _ in range(scale):
            for args in INJECTIONS:
                text = args if isinstance(args, str) else json.dumps(args)
                r = c.post("/v1/agents/inject/runs", json={"input": text})
                out = r.json().get("output", "") if r.status_code == 200 else ""
                secret = "TOP SECRET" in json.dumps(r.json()) if r.status_code == 200 else False
                ok = (
                    (r.status_code == 200 or _json_error(r))
                    and not secret
                    and "VIOLATION" not in str(out)
                )
                t.check(f"inject {text[:60]!r}: {r.status_code} {str(out)[:80]}", ok)
        # The well-formed call does work (the harness is not refusing everything).
        r = c.post("/v1/agents/inject/runs", json={"input": json.dumps({"name": "hello"})})
        t.check("a valid call works", r.status_code == 200 and "hello note" in r.json()["output"])
    t.check("no tool ran with wrong types", not violations.exists())
    t.check("server alive after injection", _alive(served))
    return t.result()


TRAVERSAL = [
    "../../../../etc/passwd",
    "..%2F..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "..\\..\\windows\\win.ini",
    "/etc/passwd",
    "%2Fetc%2Fpasswd",
    "....//....//etc/passwd",
    "state.db",
    "..%00",
    "%00",
    "a" * 300,
    "..",
    ".",
    "~root",
    "%252e%252e%252f",
]


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def traversal(served: Served, work: Path) -> dict[str, Any]:
    """Traversal ids on every route with a path parameter, in the body, and in the config."""
    t = Tally()
    folder = served.config.parent
    before = _files(work)
    with served.client(timeout=60) as c:
        for bad in TRAVERSAL:
            gets = [
                f"/v1/sessions/{bad}",
                f"/v1/runs/{bad}",
                f"/v1/runs/{bad}/events",
                f"/v1/runs/{bad}/approvals",
                f"/v1/workflows/{bad}/runs/x",
                f"/v1/workflows/chain/runs/{bad}",
                f"/v1/workflows/chain/runs/{bad}/events",
                f"/v1/workflows/{bad}/approvals",
            ]
            # "." and ".." as raw path segments are removed by the client (RFC 3986);
            # their encoded forms (%2e, %2e%2e) are in the list and do reach the server.
            for url in gets if bad not in (".", "..") else []:
                r = c.get(url)
                t.check(
                    f"GET {url[:80]}: {r.status_code}",
                    r.status_code in (400, 404)
                    and "TOP SECRET" not in r.text
                    and "root:" not in r.text,
                )
            posts: list[tuple[str, Any]] = [
                (f"/v1/agents/{bad}/runs", {"input": "x"}),
                ("/v1/agents/latent/runs", {"input": "x", "session": bad}),
                (f"/v1/runs/{bad}/approvals", {"decisions": []}),
                (f"/v1/workflows/{bad}/runs", {"input": {}}),
                ("/v1/workflows/chain/runs", {"input": {"tag": "t"}, "run_id": bad}),
                (f"/v1/workflows/chain/runs/{bad}/resume", None),
                (f"/v1/workflows/chain/runs/{bad}/cancel", None),
                (f"/v1/workflows/chain/runs/{bad}/fork", {}),
                (f"/v1/workflows/gate/approvals/{bad}", {"approved": True}),
            ]
            for url, body in posts:
                r = c.post(url, json=body) if body is not None else c.post(url)
                # A run id may be any string the store can key on; what matters is that
                # nothing lands in the file system and nothing leaks.
                t.check(
                    f"POST {url[:80]}: {r.status_code}",
                    r.status_code < 500 and "TOP SECRET" not in r.text and "root:" not in r.text,
                )
            if bad not in (".", ".."):
                # A valid id ("state.db") names a session the POST above may have made:
                # deleting it is fine, as long as the database file is untouched.
                r = c.delete(f"/v1/sessions/{bad}")
                t.check(
                    f"DELETE session {bad[:40]}: {r.status_code}",
                    r.status_code in (204, 400, 404) and (folder / "state.db").is_file(),
                )
    after = _files(work)
    created = {
        p
        for p in after - before
        if not re.fullmatch(
            r"hostile/(state\.db.*|serve-\d+\.log|effects|__pycache__.*|\.openheim.*)", p
        )
    }
    t.check(f"files created outside the store: {sorted(created)[:5]}", not created)
    # The config loader: module references that climb out of the project.
    for ref in (
        "../secret:x",
        "../../etc/passwd:x",
        "/etc/passwd:x",
        "..soakflows:latent_model",
        "soakflows/../secret:x",
        "os:system",
    ):
        text = f'[agents.evil]\nmodel = "{ref}"\n[store]\nurl = "memory://"\n'
        sub = folder / "cfg-evil"
        sub.mkdir(exist_ok=True)
        (sub / "openheim.toml").write_text(text)
        proc = subprocess.run(
            [sys.executable, "-m", "openheim", "check", "--config", str(sub / "openheim.toml")],
            capture_output=True,
            text=True,
            timeout=120,
            env=child_env(),
            cwd=sub,
        )
        clear = (
            proc.returncode != 0 and "Traceback" not in proc.stderr and bool(proc.stderr.strip())
        )
        t.check(f"config model {ref!r}: rc {proc.returncode} {proc.stderr.strip()[-120:]!r}", clear)
    t.check("server alive after traversal", _alive(served))
    return t.result()


def cross_tenant(served: Served) -> dict[str, Any]:
    """acme's sessions, runs, paused runs, workflow runs and approvals, tried by globex."""
    t = Tally()
    with served.client("acme", timeout=60) as acme, served.client("globex", timeout=60) as globex:
        r = acme.post(
            "/v1/agents/latent/runs", json={"input": "SECRET-ACME private", "session": "s-private"}
        )
        assert r.status_code == 200, r.text
        run_id = r.json()["run_id"]
        r = acme.post(
            "/v1/agents/guarded/runs", json={"input": "SECRET-ACME-db", "session": "s-guarded"}
        )
        assert r.status_code == 200, r.text
        paused = r.json()["run_id"]
        call_id = acme.get(f"/v1/runs/{paused}/approvals").json()["pending"][0]["id"]
        r = acme.post(
            "/v1/workflows/chain/runs", json={"input": {"tag": "SECRET-ACME-tag"}, "wait": True}
        )
        assert r.status_code == 200, r.text
        wf_run = r.json()["run_id"]
        r = acme.post(
            "/v1/workflows/gate/runs", json={"input": {"text": "SECRET-ACME-text"}, "wait": True}
        )
        assert r.status_code == 200, r.text
        gate_run = r.json()["run_id"]
        approval = acme.get("/v1/workflows/gate/approvals").json()["approvals"][0]["id"]

        def refused(r: httpx.Response) -> bool:
            return r.status_code in (401, 403, 404) and "SECRET-ACME" not in r.text

        attempts: list[tuple[str, str, Callable[[], httpx.Response]]] = [
            ("GET", "session", lambda: globex.get("/v1/sessions/s-private")),
            ("DELETE", "session", lambda: globex.delete("/v1/sessions/s-private")),
            ("GET", "run", lambda: globex.get(f"/v1/runs/{run_id}")),
            ("GET", "run events", lambda: globex.get(f"/v1/runs/{run_id}/events")),
            ("GET", "paused approvals", lambda: globex.get(f"/v1/runs/{paused}/approvals")),
            (
                "POST",
                "decide paused",
                lambda: globex.post(
                    f"/v1/runs/{paused}/approvals",
                    json={"decisions": [{"id": call_id, "approved": True}]},
                ),
            ),
            ("GET", "wf run", lambda: globex.get(f"/v1/workflows/chain/runs/{wf_run}")),
            ("GET", "wf events", lambda: globex.get(f"/v1/workflows/chain/runs/{wf_run}/events")),
            (
                "POST",
                "wf cancel",
                lambda: globex.post(f"/v1/workflows/gate/runs/{gate_run}/cancel"),
            ),
            ("POST", "wf resume", lambda: globex.post(f"/v1/workflows/chain/runs/{wf_run}/resume")),
            (
                "POST",
                "wf fork",
                lambda: globex.post(f"/v1/workflows/chain/runs/{wf_run}/fork", json={}),
            ),
            (
                "POST",
                "wf approve",
                lambda: globex.post(
                    f"/v1/workflows/gate/approvals/{approval}", json={"approved": True}
                ),
            ),
            (
                "POST",
                "same run_id",
                lambda: globex.post(
                    "/v1/workflows/chain/runs",
                    json={"input": {"tag": "g"}, "run_id": wf_run, "wait": True},
                ),
            ),
        ]
        # Within one tenant, another workflow's approval is not this workflow's to decide
        # (the tenant's workflows share one journal; this was a 500).
        attempts.append(
            (
                "POST",
                "other workflow's approval",
                lambda: acme.post(
                    f"/v1/workflows/chain/approvals/{approval}", json={"approved": True}
                ),
            )
        )
        for method, what, call in attempts:
            r = call()
            if what == "same run_id":  # its own run of that id in its own namespace is fine
                ok = r.status_code in (200, 202, 409) and "SECRET-ACME" not in r.text
            else:
                ok = refused(r)
            t.check(f"{method} {what}: {r.status_code} {r.text[:100]}", ok)
        for listing in ("/v1/sessions", "/v1/workflows/gate/approvals"):
            r = globex.get(listing)
            t.check(
                f"GET {listing}: {r.text[:100]}",
                r.status_code == 200
                and "SECRET-ACME" not in r.text
                and "s-private" not in r.text
                and approval not in r.text,
            )
        # No key, a wrong key, another tenant's key hash as the key.
        for headers in (
            {},
            {"Authorization": "Bearer nope"},
            {"Authorization": f"Bearer {KEYS['acme']}x"},
            {"Authorization": "Basic YWNtZTp4"},
        ):
            r = httpx.get(f"{served.url}/v1/sessions/acme-s", headers=headers, timeout=30)
            t.check(f"auth {headers}: {r.status_code}", r.status_code == 401)
        # acme's things are untouched.
        t.check(
            "acme session intact", len(acme.get("/v1/sessions/s-private").json()["messages"]) == 2
        )
        t.check(
            "acme approval still pending",
            len(acme.get(f"/v1/runs/{paused}/approvals").json()["pending"]) == 1,
        )
        st = acme.get(f"/v1/workflows/gate/runs/{gate_run}").json()["status"]
        t.check(f"acme gate run still waiting ({st})", st not in ("cancelled", "done"))
    return t.result()


def schemathesis_run(served: Served, examples: int, work: Path, seed: int = 1) -> dict[str, Any]:
    """schemathesis against /openapi.json: no 5xx, answers that match the document."""
    exe = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if exe is None:
        return {"tried": 0, "through": 0, "skipped": "schemathesis is not installed"}
    report = work / f"schemathesis-{examples}.xml"
    cmd = [
        exe,
        "run",
        f"{served.url}/openapi.json",
        "-H",
        f"Authorization: Bearer {KEYS['acme']}",
        "--max-examples",
        str(examples),
        "--seed",
        str(seed),
        "--checks",
        "not_a_server_error,response_schema_conformance,content_type_conformance,status_code_conformance",
        "--report-junit-path",
        str(report),
        "--request-timeout",
        "60",
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=3600, env=child_env(), cwd=work
    )
    out = proc.stdout + proc.stderr
    m = re.search(r"(\d[\d,]*) (?:generated|test cases)", out)
    tried = int(m.group(1).replace(",", "")) if m else 0
    failures = re.findall(r"(\d+) failures?", out)
    return {
        "tried": tried,
        "through": 0 if proc.returncode == 0 else max(1, sum(int(f) for f in failures)),
        "returncode": proc.returncode,
        "tail": out[-1500:] if proc.returncode != 0 else out[-400:],
    }


def run_all(
    scale: int = 1, examples: int = 20, work: Path | None = None
) -> dict[str, dict[str, Any]]:
    work = work or Path(tempfile.mkdtemp(prefix="openheim-soak-hostile-"))
    config, env = project(work)
    served = start_server(config, env=env)
    try:
        results = {
            "bodies": bodies(served, scale),
            "tool injection": tool_injection(served, scale),
            "path traversal": traversal(served, work),
            "cross-tenant": cross_tenant(served),
            "schemathesis": schemathesis_run(served, examples, work),
        }
        results["bodies"]["server_alive"] = _alive(served)
        return results
    finally:
        stop_server(served)


if __name__ == "__main__":
    print(json.dumps(run_all(int(os.environ.get("SOAK_SCALE", "1"))), indent=1))
