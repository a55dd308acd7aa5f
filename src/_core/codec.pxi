# State codec: CRC32C, checksummed frames around msgspec msgpack bodies, and
# atomic file replacement (C side: crc32c.c, codec.c, fileio.c).
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.number cimport PyNumber_Index
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, strerror
from ccrc32c cimport *
from ccodec cimport *
from cfileio cimport *
from os import fsencode as _fsencode

FRAME_MAGIC = b"OHSF"
FRAME_VERSION = OH_FRAME_VERSION
FRAME_HEADER_SIZE = OH_FRAME_HEADER_SIZE

# Past this many bytes, checksums run with the GIL released.
cdef Py_ssize_t _NOGIL_BYTES = 256 * 1024


# -- CRC32C -------------------------------------------------------------------

def crc32c(data, uint32_t value=0):
    """CRC32C (Castagnoli) of a bytes-like object, continuing from ``value``.

    ``crc32c(b, crc32c(a)) == crc32c(a + b)``; ``crc32c(b"123456789")`` is
    ``0xE3069283``. Uses the CPU's CRC32C instructions (SSE4.2 or ARMv8) when
    present, else slice-by-8 tables.
    """
    cdef Py_buffer view
    cdef uint32_t crc
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        if view.len >= _NOGIL_BYTES:
            with nogil:
                crc = oh_crc32c(value, view.buf, <size_t>view.len)
        else:
            crc = oh_crc32c(value, view.buf, <size_t>view.len)
    finally:
        PyBuffer_Release(&view)
    return crc


def _crc32c_sw(data, uint32_t value=0):
    """crc32c() forced onto the portable table path (tests compare the two)."""
    cdef Py_buffer view
    cdef uint32_t crc
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    crc = oh_crc32c_sw(value, view.buf, <size_t>view.len)
    PyBuffer_Release(&view)
    return crc


def _crc32c_impl():
    """Which CRC32C implementation crc32c() uses: "sse4.2", "armv8-crc" or "slice-by-8"."""
    return oh_crc32c_impl().decode("ascii")


# -- msgspec, loaded on first use so `import openheim` stays cheap -------------

cdef object _ms_encode = None          # msgspec.msgpack.Encoder().encode
cdef object _ms_decode_any = None      # msgspec.msgpack.Decoder().decode
cdef object _ms_Decoder = None
cdef object _ms_DecodeError = None
cdef object _ms_ValidationError = None
cdef dict _ms_decoders = {}            # type -> Decoder(type).decode
cdef Py_ssize_t _MAX_CACHED_DECODERS = 512


cdef int _load_msgspec() except -1:
    global _ms_encode, _ms_decode_any, _ms_Decoder, _ms_DecodeError, _ms_ValidationError
    import msgspec
    import msgspec.msgpack
    _ms_Decoder = msgspec.msgpack.Decoder
    _ms_DecodeError = msgspec.DecodeError
    _ms_ValidationError = msgspec.ValidationError
    _ms_decode_any = msgspec.msgpack.Decoder().decode
    _ms_encode = msgspec.msgpack.Encoder().encode
    return 0


cdef object _decoder_for(object tp):
    if tp is None:
        return _ms_decode_any
    try:
        return _ms_decoders[tp]
    except KeyError:
        pass
    except TypeError:  # an unhashable type: build a decoder each time
        return _ms_Decoder(tp).decode
    dec = _ms_Decoder(tp).decode
    if len(_ms_decoders) >= _MAX_CACHED_DECODERS:
        _ms_decoders.clear()
    _ms_decoders[tp] = dec
    return dec


# -- frames ---------------------------------------------------------------------

def encode_frame(obj, *, kind=0, flags=0):
    """Encode ``obj`` with msgspec msgpack and wrap it in a checksummed frame.

    ``kind`` (0..2**32-1) tags what the frame holds (a snapshot, a delta...);
    ``flags`` (0..255) are the caller's bits; the high byte of the 16-bit
    field is reserved for format features. See :func:`decode_frame`.
    """
    cdef uint32_t k
    cdef uint16_t f
    cdef Py_ssize_t n
    cdef uint8_t *p
    if _ms_encode is None:
        _load_msgspec()
    kind = PyNumber_Index(kind)  # TypeError for floats and strings
    flags = PyNumber_Index(flags)
    if not (0 <= kind <= 0xFFFFFFFF):
        raise _errors.ConfigError(f"frame kind must be an integer in 0..4294967295, got {kind!r}")
    if not (0 <= flags <= OH_FRAME_USER_FLAGS):
        raise _errors.ConfigError(
            f"frame flags must be an integer in 0..255, got {flags!r} "
            "(the high byte is reserved for format features)")
    k = kind
    f = flags
    body = _ms_encode(obj)
    n = PyBytes_GET_SIZE(body)
    out = PyBytes_FromStringAndSize(NULL, OH_FRAME_HEADER_SIZE + n)
    p = <uint8_t *>PyBytes_AS_STRING(out)
    memcpy(p + OH_FRAME_HEADER_SIZE, PyBytes_AS_STRING(body), <size_t>n)
    if n >= _NOGIL_BYTES:
        with nogil:
            oh_frame_write_header(p, f, k, p + OH_FRAME_HEADER_SIZE, <uint64_t>n)
    else:
        oh_frame_write_header(p, f, k, p + OH_FRAME_HEADER_SIZE, <uint64_t>n)
    return out


cdef int _check_frame(const uint8_t *data, Py_ssize_t n, oh_frame_info *info) except -1:
    cdef int rc
    if n >= _NOGIL_BYTES:
        with nogil:
            rc = oh_frame_check(data, <size_t>n, info)
    else:
        rc = oh_frame_check(data, <size_t>n, info)
    if rc != OH_OK:
        _raise_frame_problem(rc, data, info)
    return 0


cdef int _raise_frame_problem(int rc, const uint8_t *data, oh_frame_info *info) except -1:
    cdef Py_ssize_t n = <Py_ssize_t>info.present
    cdef Py_ssize_t body = n - OH_FRAME_HEADER_SIZE
    cdef oh_frame_problem why = info.problem
    if why == OH_FRAME_SHORT_HEADER:
        msg = (f"truncated state frame: only {n} bytes, but a frame header alone is "
               f"{OH_FRAME_HEADER_SIZE} bytes (the data was cut short)")
    elif why == OH_FRAME_BAD_MAGIC:
        start = bytes(data[:min(n, 4)])
        msg = (f"not an openheim state frame: bad magic {start!r}, expected {FRAME_MAGIC!r} "
               "(wrong data, or its first bytes are damaged)")
    elif why == OH_FRAME_SHORT_BODY:
        msg = (f"truncated state frame: its header says the body is {info.body_len} bytes "
               f"but only {body} are present (the data was cut short, or the header is damaged)")
    elif why == OH_FRAME_TRAILING:
        msg = (f"state frame has {body - <Py_ssize_t>info.body_len} trailing bytes after its "
               f"{info.body_len}-byte body (pass exactly one frame, or the header is damaged)")
    elif why == OH_FRAME_BAD_CRC:
        msg = (f"state frame checksum mismatch: stored CRC32C 0x{info.stored_crc:08x}, "
               f"computed 0x{info.computed_crc:08x} over {n - 4} bytes; the data is damaged")
    elif why == OH_FRAME_BAD_VERSION:
        msg = (f"state frame format version {info.version} not supported (this build reads "
               f"versions 1 to {OH_FRAME_VERSION}); it was written by a newer openheim: "
               "upgrade to read it")
    else:
        msg = (f"state frame uses format features 0x{info.flags & 0xFF00:04x} that this build "
               f"does not know (it reads 0x{OH_FRAME_KNOWN_FORMAT_FLAGS:04x}); it was written "
               "by a newer openheim: upgrade to read it")
    return _raise_status(rc, msg)


def decode_frame(data, *, type=None):
    """Check a frame made by :func:`encode_frame` and decode its body.

    ``type`` (e.g. a ``msgspec.Struct`` class or ``list[int]``) decodes and
    validates into that type; ``None`` gives plain Python values. Raises
    :class:`~openheim.errors.CorruptStateError` for damaged bytes (bad magic,
    cut short, trailing bytes, checksum mismatch, or a body that is not valid
    msgpack) and :class:`~openheim.errors.IncompatibleStateError` for intact
    bytes this build cannot read: a newer format version, or a body that does
    not match ``type`` (it was written with another schema). Never returns a
    partial object.
    """
    cdef Py_buffer view
    cdef oh_frame_info info
    if _ms_encode is None:
        _load_msgspec()
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        _check_frame(<const uint8_t *>view.buf, view.len, &info)
        dec = _decoder_for(type)
        # A memoryview keeps `data` alive for anything msgspec hands back
        # that points into it (msgspec.Raw); holding `view` until the body is
        # decoded keeps a bytearray from changing between check and decode.
        return dec(memoryview(data)[OH_FRAME_HEADER_SIZE:])
    except _ms_ValidationError as exc:
        raise _errors.IncompatibleStateError(
            f"state frame body does not match {type!r}: {exc}. The frame is intact, so it "
            "was written with a different schema: decode it with the type it was written "
            "with (or type=None) and migrate") from exc
    except _ms_DecodeError as exc:
        raise _errors.CorruptStateError(
            f"state frame body is not valid msgpack ({exc}) although its checksum matches: "
            "it was written damaged") from exc
    finally:
        PyBuffer_Release(&view)


cdef class FrameHeader:
    """What a frame's header says (see :func:`frame_header`)."""
    cdef readonly int version
    cdef readonly int flags
    cdef readonly unsigned long kind
    cdef readonly unsigned long long body_length

    @property
    def frame_length(self):
        """Bytes of the whole frame: header plus body."""
        return OH_FRAME_HEADER_SIZE + self.body_length

    def __repr__(self):
        return (f"FrameHeader(version={self.version}, flags={self.flags}, kind={self.kind}, "
                f"body_length={self.body_length})")

    def __eq__(self, other):
        if not isinstance(other, FrameHeader):
            return NotImplemented
        cdef FrameHeader o = <FrameHeader>other
        return (self.version == o.version and self.flags == o.flags and self.kind == o.kind
                and self.body_length == o.body_length)

    def __hash__(self):
        return hash((self.version, self.flags, self.kind, self.body_length))


def frame_header(data):
    """Check a frame (magic, length, checksum, version) without decoding its body.

    Returns its :class:`FrameHeader`; raises like :func:`decode_frame`.
    """
    cdef Py_buffer view
    cdef oh_frame_info info
    cdef FrameHeader h
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        _check_frame(<const uint8_t *>view.buf, view.len, &info)
    finally:
        PyBuffer_Release(&view)
    h = FrameHeader.__new__(FrameHeader)
    h.version = info.version
    h.flags = info.flags
    h.kind = info.kind
    h.body_length = info.body_len
    return h


# -- files -------------------------------------------------------------------------

cdef bytes _c_path(object path):
    cdef bytes b = _fsencode(path)
    if b"\0" in b:
        raise _errors.ConfigError(f"path contains a NUL byte: {path!r}")
    return b


cdef int _raise_io(oh_io_error *e, str what, object path) except -1:
    reason = strerror(e.err).decode("utf-8", "replace")
    op = e.op.decode("ascii") if e.op != NULL else "access the file"
    raise _errors.StorageError(e.err, f"{what} could not {op}: {reason}", path)


def atomic_write(path, data):
    """Replace the file at ``path`` with ``data``, atomically and durably.

    Writes a temporary file in the same directory, fsyncs it, renames it over
    ``path`` and fsyncs the directory, all with the GIL released. A reader or
    a crash sees the old content or the new, never a mix. An existing file's
    permission bits are kept. Raises :class:`~openheim.errors.StorageError`
    (with ``errno`` and ``filename``) on failure; the temporary file is removed.
    """
    cdef bytes bpath = _c_path(path)
    cdef const char *cpath = bpath
    cdef Py_buffer view
    cdef oh_io_error e
    cdef int rc
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        with nogil:
            rc = oh_atomic_write(cpath, view.buf, <size_t>view.len, &e)
    finally:
        PyBuffer_Release(&view)
    if rc == OH_IO:
        _raise_io(&e, "atomic_write", path)
    if rc != OH_OK:
        _raise_status(rc, f"atomic_write of {path!r} failed")
