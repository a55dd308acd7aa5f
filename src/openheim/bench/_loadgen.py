"""The load generator of ``openheim bench serve``, run in its own process.

``python -m openheim.bench._loadgen`` reads one JSON object on stdin (url,
model, levels, rounds, max_tokens, prompts, api key) and, for each level,
runs that many clients each streaming ``rounds`` chat completions one after
another, then prints one JSON line: the level's wall time and every
request's timings. Its own process, so the client's work is not counted in
the server's (on one machine they still share the cores).

Tokens: the ``usage`` of the stream's last chunk when the server sends it
(``stream_options.include_usage``), else one per content chunk.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from typing import Any


async def _one(client: Any, cfg: dict[str, Any], prompt: Any) -> dict[str, Any]:
    messages = (
        prompt["messages"] if isinstance(prompt, dict) else [{"role": "user", "content": prompt}]
    )
    body = {
        "model": cfg["model"],
        "messages": messages,
        "max_tokens": cfg["max_tokens"],
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        **cfg.get("extra_body", {}),
    }
    t0 = time.perf_counter()
    ttft = None
    stamps: list[float] = []
    usage_tokens = None
    try:
        async with client.stream("POST", cfg["url"] + "/chat/completions", json=body) as r:
            if r.status_code != 200:
                text = (await r.aread()).decode(errors="replace")[:300]
                return {"error": f"HTTP {r.status_code}: {text}"}
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if chunk.get("error"):
                    return {"error": str(chunk["error"])[:300]}
                usage = chunk.get("usage")
                if usage and usage.get("completion_tokens") is not None:
                    usage_tokens = int(usage["completion_tokens"])
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    if delta.get("content") or delta.get("tool_calls"):
                        now = time.perf_counter()
                        if ttft is None:
                            ttft = now - t0
                        stamps.append(now)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}
    chunks = len(stamps)
    tokens = usage_tokens if usage_tokens is not None else chunks
    gaps: list[float] = []
    if chunks == 1 and tokens > 1:
        gaps = [0.0] * (tokens - 1)  # every token arrived in one chunk
    if chunks > 1:
        # Spread the tokens evenly over the chunks after the first.
        per = max(1.0, (tokens - 1) / (chunks - 1)) if tokens > 1 else 1.0
        for a, b in itertools.pairwise(stamps):
            gaps.extend([(b - a) / per] * max(1, round(per)))
    return {"ttft": ttft, "gaps": gaps, "tokens": tokens}


async def _level(cfg: dict[str, Any], concurrency: int) -> dict[str, Any]:
    import httpx

    headers = {"Authorization": f"Bearer {cfg['api_key']}"} if cfg.get("api_key") else {}
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency)
    prompts = cfg["prompts"]
    results: list[dict[str, Any]] = []
    async with httpx.AsyncClient(
        headers=headers, limits=limits, timeout=cfg.get("timeout", 600)
    ) as client:
        counter = iter(range(concurrency * cfg["rounds"]))

        async def worker() -> None:
            for i in counter:
                results.append(await _one(client, cfg, prompts[i % len(prompts)]))

        if cfg.get("warmup", True):
            await _one(client, {**cfg, "max_tokens": min(4, cfg["max_tokens"])}, prompts[0])
            cfg["warmup"] = False
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {"concurrency": concurrency, "wall": wall, "requests": results}


def main() -> int:
    cfg = json.loads(sys.stdin.read())
    for c in cfg["levels"]:
        print(json.dumps(asyncio.run(_level(cfg, c))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
