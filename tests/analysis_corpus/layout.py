#!/usr/bin/env python
# -*- coding: utf-8 -*-
"""Module docstring
spanning lines.
"""

# a comment line

x = 1; y = 2; z = 3
if x: y = 4
try: pass
except Exception: pass

total = (x +
         y +
         z)  # trailing comment

text = """a multi-line
string that is
not a docstring"""

long_call = dict(
    a=1,
    b=[
        2,
        3,
    ],
    c={"k": (4, 5)},
)

value = 1 + \
    2 + \
    3


class Documented:
    """Class docstring."""

    def method(self):
        'single quoted docstring'
        return 1

    def other(self):
        """Multi
        line
        """
        # only a comment
        return 2
