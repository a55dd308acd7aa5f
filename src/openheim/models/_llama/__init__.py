"""Internals of the llama.cpp connector (see ``openheim.models.llama``).

- ``engine``: the continuous-batching decode loop over one shared llama context.
- ``bindings``: the llama.cpp C functions used, through llama-cpp-python's ctypes layer.
- ``grammar``: JSON-schema-constrained decoding that checks only the sampled token.
- ``protocol``: the JSON reply format for tool calls and answers, parsed as it streams.
- ``template``: chat templates from the GGUF metadata, or a plain completion template.
"""

from __future__ import annotations

import os
import sys

# llama-cpp-python's CPU backend runs its threads under OpenMP (libgomp), whose
# default wait policy keeps every worker spinning for a long while after each
# parallel region, that is after every llama_decode: a core burnt between
# steps, taken from the native loop's host work (sampling, detokenizing), its
# sampling threads, the pump thread and the asyncio loop. libgomp reads the
# policy once, when it is loaded with llama.cpp: so it is set here, before
# anything imports llama_cpp, unless the environment already chose one.
# Measured on the demo model, 2 threads, 2 shared cores: "passive" decodes
# 8 sequences 2-3x faster under load and halves the process's CPU time.
LLAMA_LOADED_BEFORE = "llama_cpp" in sys.modules
if not LLAMA_LOADED_BEFORE:
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")


def llama_threads_sleep() -> bool:
    """True if llama.cpp's CPU threads sleep between decodes (OpenMP's passive wait),
    so the cores they run on are free for host work between steps."""
    if LLAMA_LOADED_BEFORE and "OMP_WAIT_POLICY" not in os.environ:
        return False  # libgomp was loaded before this module could choose
    return os.environ.get("OMP_WAIT_POLICY", "").strip().lower() == "passive"
