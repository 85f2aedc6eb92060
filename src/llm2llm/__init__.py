"""llm2llm: grow a small model's training set from its own mistakes (LLM2LLM, arXiv 2403.15042)."""

__version__ = "0.1.0"


class UserError(Exception):
    """Bad input from the user: reported as one line, exit status 2, no traceback."""


def fail(message: str, status: int = 2):
    """For scripts: say what is wrong in one line on stderr and exit (status 2 is bad input), no traceback."""
    import sys

    print(" ".join(line.strip() for line in message.splitlines()), file=sys.stderr, flush=True)
    raise SystemExit(status)
