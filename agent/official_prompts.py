"""A prompt set from the user's own checkout of the official code (xavier-yu114/Zoom-Refine).

We do not ship the official wording; `zoom-refine prompts from-official REPO_DIR` reads it from
the user's checkout and writes a prompt-set TOML file (`agent.prompt_set`). The two pipelines keep
their prompts in a dict literal named `prompts`: module level in `zoomrefine/ZoomRefine_Base.py`
(the InternVL `model.chat` pipeline of the paper's runs), inside the `__main__` block in
`zoomrefine/ZoomRefine_API.py` (the OpenAI-compatible one). The files are parsed with `ast` and
the values read with `ast.literal_eval`: never imported or executed. A hostile checkout costs one
error line: a file over `MAX_SOURCE_BYTES`, nested past what the parser takes, linked from outside
the checkout (symlinks are resolved first, as the dataset loaders do), or a value no prompt-set
file can hold (a lone surrogate) is refused; the output file is replaced whole or not at all
(`tools.files`), and a checkout path that is not UTF-8 is written with its odd bytes escaped.

Mapping (`OFFICIAL_KEYS`): `localize` ← `user_template_1`, `refine` ← `user_template_follow_up`;
for the `api` variant also `system` ← `system_prompt_1`, which that pipeline sends. The Base
pipeline sends no system message (its dict's `system_prompt_1` is never used), so the `base`
variant has none. The official code fills its templates with `str.format(question=…)`, the same
syntax and placeholder name as ours, so the texts are kept as they are (`{question}` is the
question text; no other placeholder is used by either file at commit fc6c1ad, and any other one
is refused). A leading `<image>` line (Base) is kept in the file and stripped when the set is
loaded: our turns always put the image before the text. The API pipeline puts its image *after*
the text; a prompt set cannot reproduce that order (docs/prompts.md).
"""

from __future__ import annotations

import ast
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from zoom_refine.agent.prompt_set import PromptSet, parse_prompt_set, template_placeholders
from zoom_refine.tools.errors import InvalidInputError
from zoom_refine.tools.files import replace_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 reads TOML with the backport
    import tomli as tomllib

OfficialVariant = Literal["base", "api"]

OFFICIAL_REPOSITORY = "xavier-yu114/Zoom-Refine"
OFFICIAL_FILES: dict[OfficialVariant, str] = {
    "base": "zoomrefine/ZoomRefine_Base.py",
    "api": "zoomrefine/ZoomRefine_API.py",
}
"""Where each variant's `prompts` dict lies, relative to the repository root."""

OFFICIAL_KEYS: dict[OfficialVariant, dict[str, str]] = {
    "base": {"localize": "user_template_1", "refine": "user_template_follow_up"},
    "api": {
        "system": "system_prompt_1",
        "localize": "user_template_1",
        "refine": "user_template_follow_up",
    },
}
"""Our template name → the official `prompts` key, per variant."""

OFFICIAL_PLACEHOLDERS: dict[str, str] = {"question": "question"}
"""Official `str.format` field → ours. Both pipelines format with `question=` only (the API one
also passes `bbox_coordinates=`, which its template does not use)."""

NOT_A_DIRECTORY = "{path}: not a directory; pass your checkout of " + OFFICIAL_REPOSITORY
NO_FILE = "{path}: no such file; is {repo} a checkout of " + OFFICIAL_REPOSITORY + "?"
UNREADABLE = "{path}: cannot be read ({reason})"
NOT_PYTHON = "{path}: cannot be parsed as Python ({reason})"
NO_DICT = "{path}: no `prompts = {{...}}` dict literal found"
NO_KEY = "{path}: the prompts dict (line {line}) has no key {key!r} (it has: {keys})"
NOT_LITERAL = (
    "{path}: prompts[{key!r}] (line {line}) is not a literal string; the file is read, never "
    "run, so the value must be written out as a string"
)
BAD_PLACEHOLDER = (
    "{path}: prompts[{key!r}] uses placeholder {{{name}}}, which zoom-refine cannot fill "
    "(known: {known})"
)
EXISTS = "{path} exists; pass --force to overwrite it, or -o another file"
MAX_SOURCE_BYTES = 1 << 20
"""Largest official file read, in bytes (the real ones are about 20 kB)."""
TOO_LARGE = "{path}: {size} bytes, not an official pipeline file (those are a few tens of kB)"
TOO_NESTED = "{path}: nested too deeply to parse ({reason}); not an official pipeline file"
OUTSIDE = "{path} is a symlink leading out of the checkout {repo} (to {resolved}); refused"
NOT_UNICODE = (
    "{path}: prompts[{key!r}] holds {char}, a lone surrogate: not text a prompt-set file "
    "(UTF-8 TOML) can hold"
)
NOT_WRITTEN = "cannot write {path}: {reason}"


@dataclass(frozen=True)
class OfficialPrompts:
    """The official texts of one variant, under our template names (texts unchanged)."""

    variant: OfficialVariant
    file: Path
    """The file they were read from."""

    line: int
    """Line of the `prompts = {...}` assignment in `file`."""

    templates: dict[str, str]
    """Our template name → the official text, exactly as the file holds it."""

    keys: dict[str, str]
    """Our template name → the official key it came from."""

    def placeholders(self) -> dict[str, list[str]]:
        """Our template name → the placeholders its text uses, sorted."""
        return {name: sorted(template_placeholders(text)) for name, text in self.templates.items()}


def read_official_prompts(repo_dir: Path, variant: OfficialVariant = "base") -> OfficialPrompts:
    """The `prompts` dict of `variant`'s file in the checkout `repo_dir`, mapped to our names.
    Raises one InvalidInputError line for every problem (no directory, no file, no dict, a key
    missing, a value that is not a literal string, a placeholder we cannot fill)."""
    path = _checkout_file(repo_dir, OFFICIAL_FILES[variant])
    tree = _parsed(path)
    found = _prompts_dict(tree)
    if found is None:
        raise InvalidInputError(NO_DICT.format(path=path))
    entries = {
        key.value: value
        for key, value in zip(found.keys, found.values, strict=True)
        if isinstance(key, ast.Constant) and isinstance(key.value, str)
    }
    templates: dict[str, str] = {}
    for ours, key in OFFICIAL_KEYS[variant].items():
        node = entries.get(key)
        if node is None:
            keys = ", ".join(map(repr, entries)) or "no literal keys"
            raise InvalidInputError(NO_KEY.format(path=path, line=found.lineno, key=key, keys=keys))
        templates[ours] = _literal_string(node, path, key)
    return OfficialPrompts(
        variant=variant,
        file=path,
        line=found.lineno,
        templates=templates,
        keys=dict(OFFICIAL_KEYS[variant]),
    )


def _checkout_file(repo_dir: Path, relative: str) -> Path:
    """`relative` inside the checkout `repo_dir`, resolved; refused when missing, or when it (or
    a folder on the way) is a symlink leading out of the checkout."""
    if not repo_dir.is_dir():
        raise InvalidInputError(NOT_A_DIRECTORY.format(path=repo_dir))
    path = repo_dir / relative
    if not path.is_file():
        raise InvalidInputError(NO_FILE.format(path=path, repo=repo_dir))
    root, resolved = repo_dir.resolve(), path.resolve()
    if not resolved.is_relative_to(root):
        raise InvalidInputError(OUTSIDE.format(path=path, repo=root, resolved=resolved))
    return resolved


def _parsed(path: Path) -> ast.Module:
    """The file at `path` parsed (never run); one line for a file too large, not UTF-8, not
    Python, or nested past the parser's stack (`- - … 1`: a MemoryError or RecursionError)."""
    try:
        size = path.stat().st_size
        if size > MAX_SOURCE_BYTES:
            raise InvalidInputError(TOO_LARGE.format(path=path, size=size))
        source = path.read_bytes().decode("utf-8")
        return ast.parse(source, filename=str(path))
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidInputError(UNREADABLE.format(path=path, reason=error)) from error
    except SyntaxError as error:
        raise InvalidInputError(NOT_PYTHON.format(path=path, reason=error)) from error
    except (MemoryError, RecursionError) as error:  # the parser's stack, not the machine's memory
        reason = str(error) or type(error).__name__
        raise InvalidInputError(TOO_NESTED.format(path=path, reason=reason)) from error


def official_prompt_set_toml(official: OfficialPrompts) -> str:
    """A prompt-set TOML file holding `official`'s texts (checked by loading it back)."""
    lines = [
        f"# The official Zoom-Refine prompts ({official.variant} variant), read from the user's own",
        f"# checkout of {OFFICIAL_REPOSITORY} by `zoom-refine prompts from-official`:",
        f"#   {shown_path(official.file)} (the `prompts` dict, line {official.line}).",
        "# Not part of zoom-refine: do not redistribute it with our code.",
        "# A leading <image> line marks where InternVL puts the image; zoom-refine strips it on",
        "# load and always sends a turn's images before its text. {question} is the question",
        "# text (under the official preset: the benchmark's whole prompt).",
        "",
        f"description = {_basic_string(_description(official))}",
        "",
        "[templates]",
    ]
    for name, text in official.templates.items():
        lines += ["", f"# ← prompts[{official.keys[name]!r}]", f"{name} = {_toml_string(text)}"]
    document = "\n".join(lines) + "\n"
    read_back = tomllib.loads(document)["templates"]
    if read_back != official.templates:  # our writer's bug, never the user's input
        raise AssertionError("the written prompt set does not read back as the official texts")
    return document


def write_official_prompt_set(
    repo_dir: Path,
    output: Path | None = None,
    *,
    variant: OfficialVariant = "base",
    force: bool = False,
) -> tuple[Path, OfficialPrompts, PromptSet]:
    """Read `variant`'s prompts from `repo_dir` and write them as a prompt set to `output`
    (default: `official-<variant>-prompts.toml` in the current directory); refuses to overwrite
    an existing file unless `force`. Returns where it wrote, what it read, and the loaded set."""
    official = read_official_prompts(repo_dir, variant)
    path = output if output is not None else Path(f"official-{variant}-prompts.toml")
    if path.exists() and not force:
        raise InvalidInputError(EXISTS.format(path=path))
    document = official_prompt_set_toml(official)
    prompt_set = parse_prompt_set(document, str(path))  # the user's file must load: check first
    try:
        replace_text(path, document)  # a failed write leaves the old file as it was
    except (OSError, UnicodeEncodeError) as error:
        raise InvalidInputError(NOT_WRITTEN.format(path=path, reason=error)) from error
    return path, official, prompt_set


def _prompts_dict(tree: ast.Module) -> ast.Dict | None:
    """The first `prompts = {...}` (or `prompts: … = {...}`) assignment of a dict literal,
    module level before nested blocks (`ast.walk` is breadth-first)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        named = any(isinstance(target, ast.Name) and target.id == "prompts" for target in targets)
        if named and isinstance(value, ast.Dict):
            return value
    return None


def _literal_string(node: ast.expr, path: Path, key: str) -> str:
    """The string literal at `node` (implicit concatenation included), its placeholders
    checked; never evaluates anything but a literal."""
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as error:
        raise InvalidInputError(NOT_LITERAL.format(path=path, key=key, line=node.lineno)) from error
    if not isinstance(value, str):
        raise InvalidInputError(NOT_LITERAL.format(path=path, key=key, line=node.lineno))
    surrogate = next((c for c in value if "\ud800" <= c <= "\udfff"), None)
    if surrogate is not None:
        char = f"U+{ord(surrogate):04X}"
        raise InvalidInputError(NOT_UNICODE.format(path=path, key=key, char=char))
    try:
        used = template_placeholders(value)
    except ValueError as error:
        reason = f"not a str.format template: {error}"
        raise InvalidInputError(UNREADABLE.format(path=path, reason=reason)) from error
    for name in sorted(used):
        if name not in OFFICIAL_PLACEHOLDERS:
            known = ", ".join(f"{{{p}}}" for p in OFFICIAL_PLACEHOLDERS)
            raise InvalidInputError(
                BAD_PLACEHOLDER.format(path=path, key=key, name=name, known=known)
            )
    return value


def _description(official: OfficialPrompts) -> str:
    return (
        f"official Zoom-Refine prompts ({official.variant} variant) from "
        f"{shown_path(official.file)}"
    )


def shown_path(path: Path) -> str:
    """`path` as text UTF-8 can hold: bytes of a non-UTF-8 file name escaped (`\\xff`)."""
    return os.fsencode(path).decode("utf-8", errors="backslashreplace")


def _toml_string(text: str) -> str:
    """`text` as a TOML multi-line string: literal (`'''`, the text as it is) when it can be,
    else basic (`\"\"\"`, with escapes). The newline after the opening quotes is dropped by TOML."""
    literal_ok = "'''" not in text and not text.endswith("'")
    literal_ok = literal_ok and all(c in "\t\n" or (c >= " " and c != "\x7f") for c in text)
    if literal_ok:
        return "'''\n" + text + "'''"
    escaped = "".join(_escaped(c, keep_newline=True) for c in text)
    return '"""\n' + escaped + '"""'


def _basic_string(text: str) -> str:
    return '"' + "".join(_escaped(c, keep_newline=False) for c in text) + '"'


def _escaped(char: str, *, keep_newline: bool) -> str:
    if char == "\n" and keep_newline:
        return char
    if char in '"\\':
        return "\\" + char
    if char == "\t" or (char >= " " and char != "\x7f"):
        return char
    return f"\\u{ord(char):04x}"
