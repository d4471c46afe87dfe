"""What MXNet's C++ side writes to the process's stderr (file descriptor 2), where Python's
``sys.stderr`` redirection cannot reach: MXNet reports some conditions only there."""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile


@contextlib.contextmanager
def captured_stderr(lines):
    """For the block, send file descriptor 2 to a temporary file; on leaving, extend
    ``lines`` (a list) with what was written there, line by line."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode='w+b') as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            lines.extend(caught.read().decode(errors='replace').splitlines())
