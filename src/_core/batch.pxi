# Decode-batch filling for the llama.cpp engine: writes a run of tokens of one
# sequence straight into a llama_batch's arrays (addresses from ctypes), so
# forming a step costs no Python object per token.
from libc.stdint cimport int8_t, int32_t, uintptr_t


def fill_batch(tuple addrs, Py_ssize_t offset, tokens, int32_t pos0, int32_t seq_id,
               bint logits_last, Py_ssize_t capacity=-1):
    """Write ``tokens`` of sequence ``seq_id`` at ``offset`` of a llama_batch.

    ``addrs`` = (token*, pos*, n_seq_id*, seq_id**, logits*) as integers. Positions
    run from ``pos0``; only the last token asks for logits, and only if
    ``logits_last``. ``capacity`` (the batch size) is checked when given.
    """
    cdef int32_t *tok = <int32_t *><uintptr_t>addrs[0]
    cdef int32_t *pos = <int32_t *><uintptr_t>addrs[1]
    cdef int32_t *nseq = <int32_t *><uintptr_t>addrs[2]
    cdef int32_t **sid = <int32_t **><uintptr_t>addrs[3]
    cdef int8_t *lg = <int8_t *><uintptr_t>addrs[4]
    cdef Py_ssize_t n = len(tokens), i, j
    if offset < 0 or (capacity >= 0 and offset + n > capacity):
        raise _errors.ConfigError(
            f"batch overflow: {n} tokens at offset {offset} exceed capacity {capacity}")
    if tok == NULL or pos == NULL or nseq == NULL or sid == NULL or lg == NULL:
        raise _errors.ConfigError("fill_batch needs the five non-null llama_batch array addresses")
    for i in range(n):
        j = offset + i
        tok[j] = <int32_t>tokens[i]
        pos[j] = pos0 + <int32_t>i
        nseq[j] = 1
        sid[j][0] = seq_id
        lg[j] = 0
    if n > 0 and logits_last:
        lg[offset + n - 1] = 1
