"""Errors raised by the dataset layer."""


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not where it was looked for.

    The message is a single line saying what was looked for, where, and how to fix it, so a
    training script can print it on its own instead of a traceback.
    """

    def __init__(self, message):
        super().__init__(' '.join(str(message).split()))
