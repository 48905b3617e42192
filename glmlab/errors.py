"""The one exception type that reaches the user as a one-line message (exit status 2)."""


class GlmlabError(Exception):
    """A problem with the user's input: a config value, a file, a checkpoint, a prompt.

    The message is a single line that names what is wrong and how to fix it. The CLI prints
    it without a traceback and exits with status 2.
    """
