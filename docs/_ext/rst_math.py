"""Griffe extension: render reST math in docstrings with MathJax (pymdownx.arithmatex).

Docstrings follow the project convention of ``.. math::`` blocks and ``:math:`x```
roles, which read well in ``help()``; the site needs ``$$...$$`` and ``$...$``.
"""

from __future__ import annotations

import re
import textwrap

import griffe

_ROLE = re.compile(r":math:`([^`]+)`")


def rst_math_to_arithmatex(text: str) -> str:
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped == ".. math::":
            indent = line[: len(line) - len(line.lstrip())]
            i += 1
            body: list[str] = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith(indent + " ")):
                body.append(lines[i])
                i += 1
            math = textwrap.dedent("\n".join(body)).strip("\n")
            out += [indent + "$$", *[indent + m for m in math.splitlines()], indent + "$$", ""]
            continue
        out.append(line)
        i += 1
    # Roles may wrap across lines, so substitute on the joined text.
    return _ROLE.sub(lambda m: "$" + " ".join(m.group(1).split()) + "$", "\n".join(out))


class RstMath(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rst_math_to_arithmatex(obj.docstring.value)
