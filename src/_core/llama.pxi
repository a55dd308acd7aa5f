# Native helpers of the llama.cpp engine. They work on memory and functions
# that llama-cpp-python already loaded (addresses passed in from ctypes):
# - fill_batch writes a run of tokens straight into a llama_batch's arrays, so
#   forming a decode step costs no Python object per token;
# - whole_utf8_mask asks libllama for every token's bytes without the GIL and
#   marks the tokens that are whole UTF-8 characters.
from libc.stdint cimport int8_t, int32_t, uintptr_t

ctypedef int32_t (*_token_to_piece_fn)(const void *vocab, int32_t token, char *buf,
                                       int32_t length, int32_t lstrip, bint special) noexcept nogil


cdef bint _utf8_whole(const unsigned char *s, int32_t n) noexcept nogil:
    """True if s[0:n] is a sequence of complete, well-formed UTF-8 characters."""
    cdef int32_t i = 0, need, k
    cdef unsigned char c
    while i < n:
        c = s[i]
        if c < 0x80:
            i += 1
            continue
        if 0xC2 <= c <= 0xDF:
            need = 1
        elif 0xE0 <= c <= 0xEF:
            need = 2
        elif 0xF0 <= c <= 0xF4:
            need = 3
        else:
            return False
        if i + need >= n:  # the character runs past the end: a partial sequence
            return False
        for k in range(1, need + 1):
            if (s[i + k] & 0xC0) != 0x80:
                return False
        # overlongs / surrogates / > U+10FFFF
        if c == 0xE0 and s[i + 1] < 0xA0:
            return False
        if c == 0xED and s[i + 1] > 0x9F:
            return False
        if c == 0xF0 and s[i + 1] < 0x90:
            return False
        if c == 0xF4 and s[i + 1] > 0x8F:
            return False
        i += need + 1
    return True


def whole_utf8_mask(uintptr_t token_to_piece, uintptr_t vocab, Py_ssize_t n_vocab):
    """bytes of length n_vocab: 1 where the token's bytes are whole UTF-8 characters.

    ``token_to_piece`` is the address of libllama's ``llama_token_to_piece``
    and ``vocab`` a ``llama_vocab *``; runs without the GIL.
    """
    if token_to_piece == 0 or vocab == 0 or n_vocab <= 0:
        raise _errors.ConfigError("whole_utf8_mask needs libllama's function, a vocab and n_vocab > 0")
    cdef _token_to_piece_fn fn = <_token_to_piece_fn>token_to_piece
    out = bytearray(n_vocab)
    cdef unsigned char *o = out
    cdef char buf[256]
    cdef Py_ssize_t t
    cdef int32_t n
    with nogil:
        for t in range(n_vocab):
            n = fn(<const void *>vocab, <int32_t>t, buf, 256, 0, False)
            if n < 0:  # longer than 256 bytes: treat as not whole (never chosen when constrained)
                o[t] = 0
            else:
                o[t] = 1 if _utf8_whole(<const unsigned char *>buf, n) else 0
    return bytes(out)


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
