# cython: language_level=3, freethreading_compatible=False, auto_pickle=False, autotestdict=False
"""openheim._core: the compiled core (mailboxes, scheduler, state codec, token buffers).

Each part lives in its own ``.pxi`` beside this file and wraps one C file. C
returns status codes; the wrappers raise :mod:`openheim.errors` exceptions once
they hold the GIL again.
"""

include "errors.pxi"
include "aio.pxi"
include "mailbox.pxi"
include "tokbuf.pxi"
include "codec.pxi"
include "wal.pxi"
include "lengine.pxi"
include "sched.pxi"
