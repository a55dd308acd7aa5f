"""Internals of the llama.cpp connector (see ``openheim.models.llama``).

- ``engine``: the continuous-batching decode loop over one shared llama context.
- ``bindings``: the llama.cpp C functions used, through llama-cpp-python's ctypes layer.
- ``grammar``: JSON-schema-constrained decoding that checks only the sampled token.
- ``protocol``: the JSON reply format for tool calls and answers, parsed as it streams.
- ``template``: chat templates from the GGUF metadata, or a plain completion template.
"""
