"""The one error type binbert raises for bad input.

Every message is one line that names the culprit (file, field or parameter); the CLI prints it
as ``binbert: error: <message>`` and exits with status 2.
"""


class BinbertError(ValueError):
    """Bad input: a config, shape, file or tool that binbert cannot use as given."""
