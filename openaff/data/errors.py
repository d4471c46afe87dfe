"""Errors raised by the dataset layer."""


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not where it was looked for.

    The message is a single line saying what was looked for, where, and how to fix it, so a
    training script can print it on its own instead of a traceback.
    """

    def __init__(self, message):
        super().__init__(' '.join(str(message).split()))


class DatasetError(ValueError):
    """A dataset is there but cannot be used as it is (no image in a split, labels that do not
    match the images, a class folder that cannot be read or is unknown to training).

    Raised while the loaders are built, before any training; the message is one line naming
    the file or folder.
    """

    def __init__(self, message):
        super().__init__(' '.join(str(message).split()))


class UnreadableImageError(OSError, ValueError):
    """An image file of a dataset cannot be read or decoded; the message names the file.

    Found only when the image is loaded, so it can surface mid-epoch: it is an ``OSError``
    (what the training commands report in one line while a run is under way) and a
    ``ValueError`` (bad input, for callers that catch that).
    """

    def __init__(self, message):
        super().__init__(' '.join(str(message).split()))
