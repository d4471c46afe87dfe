"""matplotlib for the figures openaff writes (history, comparison, benchmark, log overlays)."""
import sys


def pyplot():
    """``matplotlib.pyplot``, chosen when a figure is drawn rather than at import: the
    file-only Agg backend, unless the process already uses pyplot (a notebook, or a backend the
    user picked), whose choice is kept."""
    import matplotlib
    if 'matplotlib.pyplot' not in sys.modules:
        matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt
