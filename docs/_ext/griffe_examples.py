"""Griffe extension for the documentation build: render doctest examples as Python code.

The library's docstrings end with an `Example:` heading, a blank line and doctest lines
(`>>> ...`, `... ...` and the expected output) at the heading's indentation. Griffe's Google
parser reads such a heading as plain text, and Markdown would run the doctest lines together
into one paragraph (and read `x[0]`-like output as links). This extension wraps every doctest
block (consecutive non-blank lines, the first starting with `>>>`) in a fenced `pycon` code
block before the docstring is parsed. It changes nothing in the library: it only runs inside
`mkdocs build` (mkdocs.yml loads it).
"""

import griffe


def fence_doctests(text):
    """Return `text` with each doctest block wrapped in a ```pycon fence at its indentation."""
    lines = text.split("\n")
    out = []
    i = 0
    while i < len(lines):
        stripped = lines[i].lstrip()
        if stripped.startswith(">>>") and (i == 0 or not lines[i - 1].strip().startswith("```")):
            indent = lines[i][: len(lines[i]) - len(stripped)]
            j = i
            while j < len(lines) and lines[j].strip():
                j += 1
            out.append(f"{indent}```pycon")
            out.extend(lines[i:j])
            out.append(f"{indent}```")
            i = j
        else:
            out.append(lines[i])
            i += 1
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    """Fence the doctest examples of every collected docstring (see `fence_doctests`)."""

    def on_instance(self, *, node, obj, agent, **kwargs):
        docstring = obj.docstring
        if docstring is not None and ">>>" in docstring.value:
            docstring.value = fence_doctests(docstring.value)
