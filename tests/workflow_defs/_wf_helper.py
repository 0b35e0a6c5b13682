"""A helper module next to a workflow file: it must reach the workers by value too."""


def triple(x: int) -> int:
    return 3 * x
