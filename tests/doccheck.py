"""Checks of the documentation against the code (used by test_docs.py; no pytest here).

A documented `bench run` or `bench parity` command must not only parse: the sweep it asks for
must pass the checks `bench run` makes before any work (strategy, precision, model, devices,
...), judged without this machine's hardware and without touching data or results folders.

Each `check_*` function (and `outside_pointers`) returns a list of failures, one line each,
`FILE:LINE: what: why`, so that a test asserts the list is empty and shows all of it at once.
"""
from __future__ import annotations

import contextlib
import io
import re
import shlex
import unicodedata
from pathlib import Path
from urllib.parse import unquote

# --------------------------------------------------------------------------- markdown

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)")


def doc_files(root: Path) -> list[Path]:
    """README.md and the pages under docs/."""
    return [p for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))] if p.is_file()]


def split_fences(text: str) -> tuple[list[tuple[str, int, list[str]]], list[tuple[int, str]]]:
    """(fenced blocks as (info, first content line, lines), the other lines as (number, text)).
    Line numbers count from 1."""
    blocks, prose = [], []
    fence = None  # the opening fence's characters while inside a block
    for number, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)
            blocks.append((m.group(2).lower(), number + 1, []))
        elif fence is not None and m and m.group(1)[0] == fence[0] \
                and len(m.group(1)) >= len(fence) and not m.group(2):
            fence = None  # a closing fence is at least as long as the opening and bare
        elif fence is not None:
            blocks[-1][2].append(line)
        else:
            prose.append((number, line))
    return blocks, prose


def paragraphs(prose: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """The prose lines grouped into paragraphs (first line number, text): an inline code
    span may wrap across lines but never across a blank line or a fenced block."""
    out, start, lines, previous = [], 0, [], -1
    for number, line in prose:
        if not line.strip() or number != previous + 1:
            if lines:
                out.append((start, "\n".join(lines)))
            lines = []
        if line.strip():
            if not lines:
                start = number
            lines.append(line)
        previous = number
    if lines:
        out.append((start, "\n".join(lines)))
    return out


CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.S)


def code_spans(paragraph: str) -> list[tuple[int, str]]:
    """Inline code spans as (line offset in the paragraph, text with newlines as spaces)."""
    return [(paragraph.count("\n", 0, m.start()), " ".join(m.group(2).split()))
            for m in CODE_SPAN.finditer(paragraph)]


# --------------------------------------------------------------------------- commands

# `$ `, then optional VAR=value assignments, then the interpreter and `-m bench`.
COMMAND_START = re.compile(r"^\s*(?:\$\s+)?(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*"
                           r"(?:\.venv/bin/python|python3?)\s+-m\s+bench(?=\s|$)")
INLINE_START = re.compile(r"^python -m bench ")
OPERATORS = set("|&;<>()")  # shell punctuation: a pipe, redirection, `&&`, `$(` or `;` ends argv
PLACEHOLDER = re.compile(r"^(?:[A-Z][A-Z0-9_]*|\.\.\.|…)$")  # N, FILE, DIR, SPEC, ...


def commands(path: Path, text: str) -> list[tuple[int, str]]:
    """Every bench command in a markdown text, as (line number, command)."""
    blocks, prose = split_fences(text)
    found = []
    for _info, first, lines in blocks:
        i = 0
        while i < len(lines):
            number, line = first + i, lines[i]
            i += 1
            if not COMMAND_START.match(line):
                continue
            while line.rstrip().endswith("\\") and i < len(lines):  # a continued line
                line = line.rstrip()[:-1] + " " + lines[i].strip()
                i += 1
            found.append((number, line.strip()))
    for start, paragraph in paragraphs(prose):
        for offset, span in code_spans(paragraph):
            if INLINE_START.match(span):
                found.append((start + offset, span))
    return sorted(found)


def argv_of(command: str) -> list[str]:
    """The arguments after `-m bench`, up to the first shell operator, with `# comments`
    dropped. Raises ValueError for usage notation, which a reader cannot run as written."""
    command = command.lstrip("$ ").split("$(")[0]  # a command substitution ends argv too
    # A shell comment starts at a `#` after whitespace; shlex would also cut `a#b`, so such a
    # `#` is hidden from it and put back afterwards.
    command = re.sub(r"(?<=\S)#", "\0", command)
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    tokens = [token.replace("\0", "#") for token in lexer]
    start = next(i for i in range(len(tokens) - 1) if tokens[i:i + 2] == ["-m", "bench"]) + 2
    argv = []
    for i, token in enumerate(tokens[start:], start):
        if set(token) <= OPERATORS:
            # `[--a | --b]`: a `|` followed by a flag is alternatives, not a pipe
            if token == "|" and i + 1 < len(tokens) and tokens[i + 1].startswith("-"):
                raise ValueError("usage notation 'A | B': write one concrete command")
            if token == "<" and tokens[i + 2:i + 3] == [">"]:  # `runs/<cell>/model.pt`
                raise ValueError(f"placeholder <{tokens[i + 1]}>: write a concrete value")
            break
        if "[" in token or "]" in token or " | " in token:
            raise ValueError(f"usage notation {token!r}: write a concrete command")
        if PLACEHOLDER.match(token):
            raise ValueError(f"placeholder {token!r}: write a concrete value")
        argv.append(token)
    return argv


def parse_error(argv: list[str]) -> str | None:
    """What the CLI's own parser says against argv (None when it accepts it); nothing runs."""
    return parsed(argv)[1]


def parsed(argv: list[str]):
    """(the parsed arguments, None) when the CLI's parser accepts argv; (None, why) when it
    refuses it; (None, None) for --help. Nothing runs."""
    from bench.cli import parse_args
    from bench.config.builtin_specs import BUILTIN

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            args = parse_args(argv)
    except SystemExit as exc:
        if not exc.code:  # --help
            return None, None
        lines = [line for line in err.getvalue().splitlines() if line.strip()]
        return None, lines[-1] if lines else f"exit {exc.code}"
    except Exception as exc:  # noqa: BLE001 - a type converter that raises is a failure too
        return None, f"{type(exc).__name__}: {exc}"
    spec = getattr(args, "spec", None)
    if args.command in ("run", "spec", "slurm") and spec is not None:
        if not spec.endswith((".yaml", ".yml", ".json")) and spec not in BUILTIN:
            return None, f"'{spec}' is no built-in spec ({', '.join(BUILTIN)}) nor a spec file"
    return args, None


# GPUs a CUDA command's sweep is sized for when it names no --devices (`expand`'s `gpus`); each
# cell is then judged as if the GPUs it asks for existed (`validate(..., gpus=None)`).
SWEEP_GPUS = 8
_SWEEP_VERDICTS: dict[str, str | None] = {}  # a sweep already judged (the docs repeat some)


def sweep_verdict(resolved) -> str | None:
    """`validate(resolved, gpus=None)`'s refusal, or None. Only the first repeat's cells are
    judged: expansion puts repeats outermost, so they keep their indices, and a later repeat
    differs from them only in its seed, which validation does not read."""
    import json

    from bench.config.spec import ResolvedSweep
    from bench.errors import BadInput
    from bench.sweep.plan import validate

    key = json.dumps([resolved.device_type, resolved.spec.from_flags, resolved.spec.to_dict()],
                     sort_keys=True, default=repr)
    if key not in _SWEEP_VERDICTS:
        first = [c for c in resolved.cells if c.repeat == 0]
        try:
            validate(ResolvedSweep(resolved.spec, resolved.device_type, first), None)
            _SWEEP_VERDICTS[key] = None
        except BadInput as exc:
            _SWEEP_VERDICTS[key] = str(exc)
    return _SWEEP_VERDICTS[key]


def sweep_error(root: Path, args) -> str | None:
    """What `bench run` or `bench parity` would refuse in the sweep the parsed arguments ask
    for, found by `bench.cli.run.sweep_of` as `bench run` finds it, but without this machine's
    hardware and without preparing data or a results folder: a command with `--device cpu` (or
    a spec whose workload.device is cpu) is judged on CPU, any other on CUDA GPUs. A spec file
    that is not in the repository (an example name such as my-sweep.yaml) is not loaded."""
    import copy

    from bench.cli.run import reject_workload_flags, sweep_of
    from bench.config.builtin_specs import BUILTIN
    from bench.config.spec import DEVICE_CHOICES
    from bench.errors import BadInput
    from bench.sweep.hardware import default_device_type
    from bench.sweep.plan import expand

    def judged_on(device: str) -> str:
        if device not in DEVICE_CHOICES:
            default_device_type(device)  # its refusal of an unknown device
        return "cpu" if device == "cpu" else "cuda"

    args = copy.copy(args)
    if args.command == "parity":  # what cmd_parity does before resolve()
        args.steps, args.warmup = args.check_steps, 0
    try:
        ref = getattr(args, "spec", None)
        if ref and (root / ref).is_file():
            args.spec = str(root / ref)
        elif ref and ref not in BUILTIN:
            reject_workload_flags(args)  # an example spec file: only what needs no file
            return None
        spec, _notes, device_type, _out = sweep_of(args, "run", judged_on, lambda: SWEEP_GPUS)
        return sweep_verdict(expand(spec, device_type, SWEEP_GPUS))
    except BadInput as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - a crash where a sentence was due is a failure too
        return f"{type(exc).__name__}: {exc}"


def command_error(root: Path, command: str) -> str | None:
    """Why a documented command would be refused: its notation, its arguments, or (for `run`
    and `parity`) the sweep they ask for. None when it would run."""
    try:
        args, error = parsed(argv_of(command))
    except ValueError as exc:
        return str(exc)
    if error or args is None:
        return error
    if args.command in ("run", "parity"):
        return sweep_error(root, args)
    return None


def check_commands(root: Path, files: list[Path]) -> list[str]:
    failures = []
    for path in files:
        for number, command in commands(path, path.read_text()):
            error = command_error(root, command)
            if error:
                failures.append(f"{path.relative_to(root)}:{number}: {command}: {error}")
    return failures


# --------------------------------------------------------------------------- specs

def spec_blocks(text: str) -> list[tuple[int, str]]:
    """Fenced ```yaml blocks, as (first line, text)."""
    blocks, _ = split_fences(text)
    return [(first, "\n".join(lines)) for info, first, lines in blocks if info in ("yaml", "yml")]


def spec_error(text: str) -> str | None:
    """Why a YAML block that shows a spec (top-level matrix or workload) is not a valid one;
    None when it is valid or shows something else."""
    import yaml

    from bench.config.spec import parse_spec
    from bench.errors import BadInput

    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return f"not valid YAML: {str(exc).splitlines()[0]}"
    if not isinstance(raw, dict) or not {"matrix", "workload"} & set(raw):
        return None
    try:
        parse_spec(raw)
    except BadInput as exc:
        return str(exc)
    return None


def check_specs(root: Path, files: list[Path]) -> list[str]:
    failures = []
    for path in files:
        for number, text in spec_blocks(path.read_text()):
            error = spec_error(text)
            if error:
                failures.append(f"{path.relative_to(root)}:{number}: yaml spec: {error}")
    return failures


def check_spec_files(root: Path) -> list[str]:
    """The spec files the repository ships load as `bench run FILE` loads them."""
    from bench.config.spec import load_spec
    from bench.errors import BadInput

    failures = []
    for path in sorted([*root.glob("benchmarks/*.yaml"), *root.glob("docs/*.yaml")]):
        try:
            load_spec(str(path))
        except BadInput as exc:
            failures.append(f"{path.relative_to(root)}: {exc}")
    return failures


# --------------------------------------------------------------------------- links

LINK = re.compile(r"\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")  # [text](target "title")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(\S+)")  # [name]: target
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")


def links(text: str) -> list[tuple[int, str]]:
    """Link and image targets outside code, as (line, target)."""
    _, prose = split_fences(text)
    found = []
    for start, paragraph in paragraphs(prose):
        outside = CODE_SPAN.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), paragraph)
        for m in LINK.finditer(outside):
            found.append((start + outside.count("\n", 0, m.start()), m.group(1).strip("<>")))
        for offset, line in enumerate(outside.splitlines()):
            m = REFERENCE.match(line)
            if m:
                found.append((start + offset, m.group(1).strip("<>")))
    return found


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: the rendered text lowercased, every character but
    letters, digits, spaces, hyphens and underscores dropped, spaces made hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link renders as its text
    text = re.sub(r"<[^>]+>", "", text).lower()
    kept = "".join(c for c in text
                   if c in " -_" or unicodedata.category(c)[0] in "LMN")
    return kept.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor a markdown page has: its headings' slugs (a repeated slug gets -1, -2, ...)
    and explicit <a name|id> anchors."""
    _, prose = split_fences(text)
    seen: dict[str, int] = {}
    out = set()
    previous = ""
    for _number, line in prose:
        m = HEADING.match(line)
        title = m.group(2) if m else None
        underline = re.match(r"^ {0,3}(=+|-+)\s*$", line)
        if not m and underline and previous.strip() and not HEADING.match(previous) \
                and not previous.lstrip().startswith(("|", "-", "*")):
            title = previous.strip()  # a setext heading: text underlined with === or ---
        if title is not None:
            slug = github_slug(title)
            out.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
            seen[slug] = seen.get(slug, 0) + 1
        out.update(HTML_ANCHOR.findall(line))
        previous = line
    return out


def link_error(root: Path, source: Path, target: str) -> str | None:
    if re.match(r"^(https?:|mailto:)", target, re.I):
        return None
    path_part, _, anchor = unquote(target).partition("#")
    if path_part.startswith("/"):  # GitHub reads /x as the repository's root
        dest = (root / path_part.lstrip("/")).resolve()
    else:
        dest = (source.parent / path_part).resolve() if path_part else source.resolve()
    if not dest.is_relative_to(root.resolve()):
        return "points outside the repository"
    if not dest.exists():
        return "no such file"
    if anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text()):
        return f"no heading with anchor #{anchor} in {dest.relative_to(root.resolve())}"
    return None


def check_links(root: Path, files: list[Path]) -> list[str]:
    failures = []
    for path in files:
        for number, target in links(path.read_text()):
            error = link_error(root, path, target)
            if error:
                failures.append(f"{path.relative_to(root)}:{number}: link {target}: {error}")
    return failures


def linked_pages(root: Path, page: Path) -> set[Path]:
    """The repository's markdown pages that `page` links to (resolved paths)."""
    out = set()
    for _number, target in links(page.read_text()) if page.is_file() else []:
        path_part = unquote(target).partition("#")[0]
        if path_part.endswith(".md") and not re.match(r"^[a-z]+:", path_part, re.I):
            base = root if path_part.startswith("/") else page.parent
            out.add((base / path_part.lstrip("/")).resolve())
    return out


# --------------------------------------------------------------------------- outside pointers

# Written so that these lines do not match themselves.
OUTSIDE = re.compile(r"shared/(?:reference|DESIGN)|DESIGN\.md|\benvironment\.md|KINDS\.md|/w[o]rk/"
                     r"|\b[Ii]ssue #?\d+")
SCANNED_FOLDERS = ("bench", "models", "launchers", "slurm", "reports", "scripts", "tests",
                   "benchmarks")
SCANNED_FILES = ("Makefile", "setup.cfg", "pyproject.toml", ".ci/run")


def outside_pointers(root: Path) -> list[str]:
    """Mentions of things outside the repository (a reader of the repository has none of them)."""
    files = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    files += [p for d in SCANNED_FOLDERS for p in sorted((root / d).rglob("*"))
              if p.is_file() and "__pycache__" not in p.parts]
    files += [root / f for f in SCANNED_FILES] + sorted(root.glob("requirements*.txt"))
    hits = []
    for path in files:
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError):  # missing, or binary data
            continue
        for number, line in enumerate(text.splitlines(), 1):
            for m in OUTSIDE.finditer(line):
                hits.append(f"{path.relative_to(root)}:{number}: {m.group(0)}: {line.strip()}")
    return hits
