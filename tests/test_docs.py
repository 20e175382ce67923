"""Every ```python block of README.md and docs/**/*.md runs, so no example goes stale.

Rules (also for authors of new pages):

* a fenced block whose info string is `python` (or `py`) is executed; the blocks of one page
  run in order in one namespace, from the repository root, so a page can build on its earlier
  blocks and read repository files such as `tests/fixtures/...`;
* a block is skipped when its info string is `python-skip`, or when the last non-blank line
  before its opening fence is the HTML comment `<!-- doc-test: skip (why) -->` (say why: a GPU
  run, a download, a file the reader must supply). The comment does not show on the rendered
  page or the package page; no marker goes inside a block, where readers would see it
  (`test_no_markers_inside_code_blocks`). Other languages (`bash`, `text`, ...) are never
  executed;
* where every top-level `print(...)` of a block ends with a comment, the printed lines are
  checked against those comments: each printed line must be the start of its comment
  (`print(x.shape)  # (4, 3): logits` passes when it prints `(4, 3)`).

Keep executed blocks tiny (seconds on a CPU, under jax, torch and tensorflow): this file runs once
per back end. Blocks must not write into the repository (use `tempfile`).
"""

import ast
import contextlib
import io
import io as _io
import pathlib
import re
import tokenize

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SKIP_MARK = re.compile(r"^\s*<!--\s*doc-test:\s*skip\b.*-->\s*$")
OLD_SKIP_MARK = "doc-test:"  # a marker inside a code block (the old `# doc-test: skip` comment)
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\s`]*)[^`]*$")


def extract_blocks(text):
    """The fenced code blocks of a Markdown text.

    Args:
        text: str, Markdown.

    Returns:
        list of `(line, info, code)`: the 1-based line of the opening fence, the info string's
        first word (`""` if none) and the block's code, dedented by the fence's indentation.
        Where the last non-blank line before the fence is `<!-- doc-test: skip ... -->`, the
        info is returned with `-skip` appended (`"python-skip"`), so the block is not executed.
    """
    blocks = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, info = match.group("indent"), match.group("fence"), match.group("info")
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        body = []
        j = i + 1
        while j < len(lines) and not closing.match(lines[j]):
            line = lines[j]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            j += 1
        before = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        if SKIP_MARK.match(before):
            info += "-skip"
        blocks.append((i + 1, info, "\n".join(body) + "\n"))
        i = j + 1
    return blocks


def is_executed(info, code):
    """Whether a block runs: a `python`/`py` block (not `python-skip`, not marked skipped)."""
    return info in ("python", "py")


def expected_prints(code):
    """The comments ending the block's top-level `print(...)` statements, or None.

    None when the block has no top-level print, or a print without a comment (then its output
    is not checked).
    """
    tree = ast.parse(code)
    prints = [
        node
        for node in tree.body
        if isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Call)
        and isinstance(node.value.func, ast.Name)
        and node.value.func.id == "print"
    ]
    if not prints:
        return None
    comments = {}
    for token in tokenize.generate_tokens(_io.StringIO(code).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string[1:].strip()
    expected = [comments.get(node.end_lineno) for node in prints]
    return None if None in expected else expected


def _pages():
    pages = [ROOT / "README.md"] + sorted((ROOT / "docs").rglob("*.md"))
    return [page for page in pages if page.exists()]


def _executable_pages():
    found = []
    for page in _pages():
        blocks = extract_blocks(page.read_text(encoding="utf-8"))
        if any(is_executed(info, code) for _, info, code in blocks):
            found.append(page)
    return found


def test_extract_blocks_and_markers():
    text = "\n".join(
        [
            "# Title",
            "```python",
            "x = 1",
            "```",
            "text",
            "```bash",
            "make test",
            "```",
            "```python-skip",
            "raise RuntimeError",
            "```",
            "* item",
            "",
            "    <!-- doc-test: skip (GPU) -->",
            "    ```python",
            "    raise RuntimeError",
            "    ```",
            "````py",
            "s = '''",
            "```",
            "'''",
            "````",
            "```",
            "plain",
            "```",
        ]
    )
    blocks = extract_blocks(text)
    assert [(line, info) for line, info, _ in blocks] == [
        (2, "python"),
        (6, "bash"),
        (9, "python-skip"),
        (15, "python-skip"),
        (18, "py"),
        (23, ""),
    ]
    assert blocks[0][2] == "x = 1\n"
    assert blocks[3][2] == "raise RuntimeError\n"
    assert blocks[4][2] == "s = '''\n```\n'''\n"  # a longer fence encloses a shorter one
    assert [is_executed(info, code) for _, info, code in blocks] == [
        True,
        False,
        False,
        False,
        True,
        False,
    ]


def test_skip_marker_is_the_line_before_the_fence():
    text = "<!-- doc-test: skip (a file) -->\n\n```python\nx = 1\n```\n<!-- note -->\n```python\ny = 2\n```\n"
    assert [info for _, info, _ in extract_blocks(text)] == ["python-skip", "python"]


def test_no_markers_inside_code_blocks():
    """Readers see code blocks (on the site and the package page); markers go in HTML comments."""
    found = []
    for page in _pages():
        for line, info, code in extract_blocks(page.read_text(encoding="utf-8")):
            if OLD_SKIP_MARK in code:
                found.append(f"{page.relative_to(ROOT).as_posix()}:{line}")
    assert not found, (
        "put `<!-- doc-test: skip (why) -->` on the line before the block instead of a "
        f"comment inside it: {found}"
    )


def test_expected_prints():
    assert expected_prints("print(1)  # 1: one\nx = 2\nprint(x,\n      x)  # 2 2\n") == [
        "1: one",
        "2 2",
    ]
    assert expected_prints("print(1)\nprint(2)  # 2\n") is None
    assert expected_prints("x = 1\n") is None
    assert expected_prints("if True:\n    print(1)\n") is None  # only top-level prints count


def test_docs_have_executable_blocks():
    names = {page.relative_to(ROOT).as_posix() for page in _executable_pages()}
    # The pages whose examples this project maintains; more may be added.
    assert {"docs/getting_started.md", "docs/model.md", "docs/checkpoints.md"} <= names


@pytest.mark.parametrize("page", _executable_pages(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_code_blocks_run(page, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace = {"__name__": "__doc_test__"}
    relative = page.relative_to(ROOT).as_posix()
    for line, info, code in extract_blocks(page.read_text(encoding="utf-8")):
        if not is_executed(info, code):
            continue
        where = f"{relative}, block at line {line}"
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            try:
                exec(compile(code, where, "exec"), namespace)
            except Exception as error:  # name the block in the failure
                raise AssertionError(f"{where} failed: {type(error).__name__}: {error}") from error
        expected = expected_prints(code)
        if expected is None:
            continue
        printed = output.getvalue().rstrip("\n").split("\n")
        assert len(printed) == len(expected), (
            f"{where}: {len(expected)} commented prints but {len(printed)} printed lines: {printed}"
        )
        for actual, comment in zip(printed, expected):
            assert actual.strip() and comment.startswith(actual.strip()), (
                f"{where}: printed {actual.strip()!r}, the comment says {comment!r}"
            )
