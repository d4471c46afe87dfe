"""Output files of the commands, settled before any work: the path that will really be written,
and a one-line ``ValueError`` when it cannot be."""
from __future__ import annotations

import os
import tempfile


def output_path(flag, path, default_name, extensions=None):
    """The file a command will write for ``flag PATH``, checked before the computation.

    An existing folder gets ``default_name`` inside it (matplotlib would write ``DIR.png``
    beside it); a name without an extension gets ``default_name``'s (matplotlib appends one
    silently, and the command would print a name it never wrote). ``extensions`` (with their
    dots), when given, are the ones the writer can produce. ``ValueError`` names the flag when
    the folder is missing or not writable, or the path is a folder or a read-only file.
    """
    path = os.path.expanduser(os.fspath(path))
    if os.path.isdir(path):
        path = os.path.join(path, default_name)
    stem, extension = os.path.splitext(path)
    if not extension:
        path += os.path.splitext(default_name)[1]
    elif extensions is not None and extension.lower() not in extensions:
        raise ValueError(f'{flag} {path}: cannot write {extension} files (use one of '
                         f'{", ".join(sorted(extensions))})')
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f'{flag} {path}: no such folder {folder}')
    if os.path.isdir(path):
        raise ValueError(f'{flag} {path}: is a folder')
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise ValueError(f'{flag} {path}: the file is read-only')
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ValueError(f'{flag} {path}: cannot write in {folder} '
                         f'({err.strerror or type(err).__name__})') from None
    return path


def figure_extensions():
    """The file types matplotlib's Agg canvas writes (``{'.png', '.pdf', ...}``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    return {'.' + kind for kind in FigureCanvasAgg.get_supported_filetypes()}
