"""The manual cannot drift from the code. Every page -- README.md, docs/*.md and the README of each top folder --
is read, and the test fails on:

- a relative link ``[text](path#anchor)`` whose file does not exist, or whose anchor is not a heading of that
  ``.md`` page (GitHub's slugs: lower case, punctuation dropped, spaces to hyphens, ``-1``, ``-2`` for repeats);
- a ``convnextpose …`` command the CLI's own parser (``cli.build_parser``) rejects, or a synopsis naming a
  subcommand or an option that does not exist;
- a ``make X`` whose target the Makefile does not have;
- an option of a subcommand that no synopsis of the manual names (so a new flag gets documented).

What counts as a command:

- fenced blocks marked ``sh``, ``shell``, ``bash``, ``console`` or ``text``, or unmarked: every line (in
  ``console`` blocks only the lines after a ``$`` prompt); a line that starts with whitespace continues the one
  before it, as does a line after a trailing backslash; ``# comments`` are dropped;
- inline code spans (they may wrap within a paragraph);
- of those, the ones whose first word, after any ``NAME=value`` assignments, is ``convnextpose``,
  ``.venv/bin/convnextpose`` or ``make``; a line holding ``&&``, ``;`` or `` | `` is cut there first (unless it
  is a synopsis). ``python -m …``, other programs and a bare ``export --strict`` are not checked.

How a ``convnextpose`` command is checked:

- the program's name alone (``convnextpose``) is not a command; ``convnextpose SUB`` alone names a subcommand,
  which must exist; so must the subcommand of a line holding ``--help``;
- a *synopsis* -- it holds ``[``, ``…`` or ``...`` (optional parts, alternatives, elisions) -- names a
  subcommand that exists, and every ``-x`` / ``--option`` in it is an option of that subcommand;
- any other command is parsed by the real parser without running anything: options, choices, types, required
  arguments. Placeholders stand for any value: a word in capitals (``OUT``, ``DIR``, ``PX``, ``N``,
  ``RESULTS.json``) or one holding ``…``/``...`` is accepted where the argument's type or choices refuse it;
  as a subcommand (``convnextpose SUB --help``) or a make target (``make X``) it stands for any.

How a ``make`` command is checked: every word that is not an option or a ``NAME=value`` is a target, which must
be a rule (``target:``) or listed in ``.PHONY``.
"""

from __future__ import annotations

import argparse
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[1]
SHELL_BLOCKS = {"", "sh", "shell", "bash", "console", "text"}
PROGRAMS = {"convnextpose", ".venv/bin/convnextpose"}
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*(\.[a-z]+)?$")
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.S)


def pages(repo: Path = REPO) -> list[Path]:
    top = [repo / "README.md", *sorted((repo / "docs").rglob("*.md"))]
    folders = sorted(p for p in repo.glob("*/README.md") if not p.parent.name.startswith("."))
    return [p for p in top if p.is_file()] + [p for p in folders if p not in top]


# ---- reading a page ----------------------------------------------------------------------------
@dataclass
class Page:
    path: Path
    prose: str  # the text with fenced blocks blanked out (line numbers kept)
    blocks: list[tuple[str, int, list[str]]] = field(default_factory=list)  # (language, first line, lines)
    headings: list[str] = field(default_factory=list)


def read_page(path: Path, text: str | None = None) -> Page:
    text = path.read_text() if text is None else text
    prose, blocks, headings = [], [], []
    fence, language, start, body = None, "", 0, []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.lstrip()
        if fence is None and stripped.startswith(("```", "~~~")):
            fence, language, start, body = stripped[:3], stripped[3:].strip().split(" ")[0].lower(), number + 1, []
            prose.append("")
        elif fence is not None and stripped.startswith(fence):
            blocks.append((language, start, body))
            fence = None
            prose.append("")
        elif fence is not None:
            body.append(line)
            prose.append("")
        else:
            prose.append(line)
            if re.match(r"^#{1,6}\s", line):
                headings.append(line.lstrip("#").strip())
    return Page(path, "\n".join(prose), blocks, headings)


def slugs(headings: list[str]) -> set[str]:
    """GitHub's heading anchors: links and markup reduced to their text, lower case, everything but letters,
    digits, spaces, hyphens and underscores dropped, spaces to hyphens; a repeated slug gets -1, -2..."""
    seen: dict[str, int] = {}
    out = set()
    for heading in headings:
        text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
        text = "".join(ch for ch in text.lower() if ch.isalnum() or ch in " -_").replace(" ", "-")
        n = seen.get(text, 0)
        seen[text] = n + 1
        out.add(text if n == 0 else f"{text}-{n}")
    return out


def spans(prose: str) -> list[tuple[int, str]]:
    """Inline code spans (line, text) within a paragraph, whitespace collapsed."""
    found = []
    for m in _SPAN.finditer(prose):
        if "\n\n" not in m.group(2):
            found.append((prose.count("\n", 0, m.start()) + 1, " ".join(m.group(2).split())))
    return found


def block_commands(language: str, start: int, lines: list[str]) -> list[tuple[int, str]]:
    if language not in SHELL_BLOCKS:
        return []
    commands: list[tuple[int, str]] = []
    continued = False
    for offset, line in enumerate(lines):
        if language == "console":
            if not line.startswith("$ "):
                continued = False
                continue
            line = line[2:]
        if commands and (continued or (line[:1].isspace() and line.strip())):
            commands[-1] = (commands[-1][0], commands[-1][1] + " " + line.strip())
        elif line.strip():
            commands.append((start + offset, line.strip()))
        continued = line.rstrip().endswith("\\")
        if continued:
            commands[-1] = (commands[-1][0], commands[-1][1].rstrip()[:-1].rstrip())
    return commands


def is_synopsis(words: list[str]) -> bool:
    return any("[" in w or "…" in w or "..." in w for w in words)


def words_of(command: str) -> list[list[str]]:
    """The commands of one line, each as words after its NAME=value assignments, comments dropped."""
    try:
        words = shlex.split(command, comments=True)
    except ValueError:  # an apostrophe in prose: plain words
        words = command.split()
    if is_synopsis(words):
        parts = [words]
    else:
        parts, current = [], []
        for word in words:
            if word in ("&&", ";", "|", "||"):
                parts.append(current)
                current = []
            else:
                current.append(word.rstrip(";"))
        parts.append(current)
    return [ws[next((i for i, w in enumerate(ws) if not _ASSIGNMENT.match(w)), len(ws)):] for ws in parts]


# ---- checking it -------------------------------------------------------------------------------
class CommandRejected(Exception):
    pass


def _placeholder(value: str) -> bool:
    return bool(_PLACEHOLDER.match(value)) or "…" in value or "..." in value


class _CheckingParser(argparse.ArgumentParser):
    """The real parser's grammar; errors raised instead of printed and exited; placeholders accepted."""

    def error(self, message):
        raise CommandRejected(message)

    def exit(self, status=0, message=None):
        raise CommandRejected(message or f"exit {status}")

    def _get_value(self, action, arg_string):
        try:
            return super()._get_value(action, arg_string)
        except argparse.ArgumentError:
            if _placeholder(arg_string):
                return arg_string
            raise

    def _check_value(self, action, value):
        if not (isinstance(value, str) and _placeholder(value)):
            super()._check_value(action, value)


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def checking(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    for p in (parser, *subcommands(parser).values()):
        p.__class__ = _CheckingParser
    return parser


def make_targets(makefile: Path) -> set[str]:
    text = re.sub(r"\\\n", " ", makefile.read_text())
    targets = set()
    for line in text.splitlines():
        if line.startswith(".PHONY:"):
            targets |= set(line.split(":", 1)[1].split())
        elif (m := re.match(r"^([^\s:=#][^:=#]*?)\s*:(?!=)", line)) and "$" not in m.group(1):
            targets |= set(m.group(1).split())
    return targets


@dataclass
class Checker:
    parser: argparse.ArgumentParser
    targets: set[str]
    repo: Path
    named: dict[str, set[str]] = field(default_factory=dict)  # subcommand -> options a synopsis names

    def command(self, words: list[str]) -> str | None:
        """What is wrong with one command, or None."""
        if not words:
            return None
        if words[0] == "make":
            unknown = [w for w in words[1:] if not w.startswith("-") and not _ASSIGNMENT.match(w)
                       and w not in self.targets and not _placeholder(w)]
            return f"no make target {', '.join(unknown)}" if unknown else None
        if words[0] not in PROGRAMS:
            return None
        args = words[1:]
        sub = next((w for w in args if not w.startswith("-")), None)
        subs = subcommands(self.parser)
        if sub is None:
            return None if all(w in ("-v", "--verbose", "-h", "--help") for w in args) else "no subcommand"
        if sub not in subs:
            return None if _placeholder(sub) else f"no subcommand {sub!r}"
        options = subs[sub]._option_string_actions
        if is_synopsis(args):
            named = {w.strip("[]|(),").split("=")[0] for w in args if w.strip("[]|(),").startswith("-")}
            named = {n for n in named if n and n not in ("-v", "--verbose")}
            self.named.setdefault(sub, set()).update(named & set(options))
            unknown = sorted(named - set(options))
            return f"{sub}: no option {', '.join(unknown)}" if unknown else None
        if len([w for w in args if w not in ("-v", "--verbose")]) == 1 or {"-h", "--help"} & set(args):
            return None
        try:
            self.parser.parse_args(args)
        except CommandRejected as exc:
            return str(exc).strip()
        return None

    def page(self, path: Path, text: str | None = None) -> list[str]:
        page = read_page(path, text)
        where = path.relative_to(self.repo) if path.is_relative_to(self.repo) else path
        problems = [f"{where}:{line}: link {target}: {why}" for line, target, why in self.links(page)]
        commands = [c for block in page.blocks for c in block_commands(*block)] + spans(page.prose)
        for line, command in commands:
            for words in words_of(command):
                why = self.command(words)
                if why:
                    problems.append(f"{where}:{line}: `{command}`: {why}")
        return problems

    def links(self, page: Page) -> list[tuple[int, str, str]]:
        prose = _SPAN.sub(lambda m: " " * len(m.group(0)) if "\n\n" not in m.group(2) else m.group(0), page.prose)
        bad = []
        for m in _LINK.finditer(prose):
            target, line = m.group(1), prose.count("\n", 0, m.start()) + 1
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
                continue
            file, _, anchor = unquote(target).partition("#")
            path = (page.path.parent / file).resolve() if file else page.path
            if file and not path.exists():
                bad.append((line, target, "no such file"))
            elif file and not path.is_relative_to(self.repo.resolve()):
                bad.append((line, target, "outside the repository"))
            elif anchor and path.suffix == ".md":
                headings = page.headings if path == page.path else read_page(path).headings
                if anchor not in slugs(headings):
                    bad.append((line, target, f"no heading #{anchor} in {path.name}"))
        return bad

    def undocumented(self) -> list[str]:
        missing = []
        for name, sub in subcommands(self.parser).items():
            for action in sub._actions:
                if action.option_strings and not {"-h", "--help"} & set(action.option_strings) \
                        and not set(action.option_strings) & self.named.get(name, set()):
                    missing.append(f"convnextpose {name} {'/'.join(action.option_strings)}")
        return missing


def checker(parser: argparse.ArgumentParser | None = None, repo: Path = REPO) -> Checker:
    from cli import build_parser

    return Checker(checking(parser or build_parser()), make_targets(repo / "Makefile"), repo)


# ---- the manual --------------------------------------------------------------------------------
def test_every_page_s_links_commands_and_make_targets_exist():
    check = checker()
    problems = [p for page in pages() for p in check.page(page)]
    assert not problems, "\n" + "\n".join(problems)
    missing = check.undocumented()
    assert not missing, "options no synopsis of the manual names:\n" + "\n".join(missing)


def test_the_pages_are_the_readme_the_manual_and_the_folders_readmes():
    names = [str(p.relative_to(REPO)) for p in pages()]
    assert names[0] == "README.md" and "docs/README.md" in names and "weights/README.md" in names
    assert len(names) == len(set(names))


# ---- and that it fails ---------------------------------------------------------------------------
BROKEN = """# A page

## Usage

See [the export page](export.md#options), [a missing page](nope.md), [a missing heading](#no-such-heading) and
[another page's missing heading](export.md#no-such-option), [the web](https://example.org/x.md#y).

```sh
convnextpose export --variant S --out OUT --formats onnx,tflite       # fine: OUT is a placeholder
convnextpose export --variant S --out OUT --no-such-flag
convnextpose bench OUT --repeats N --only …                           # placeholders
make export VARIANT=S && make deploy
```

```console
$ convnextpose inspect snapshot.pth.tar --variant xxs
convnextpose: an output line, not a command
```

Also `convnextpose exprot --out X`, `convnextpose verify OUT [--arch host|arm64] [--no-gpu]`, `make test-fast`,
`convnextpose export`, `convnextpose` and `PIP_CACHE_DIR=/tmp/x make install`.
"""


def test_a_broken_link_anchor_flag_subcommand_and_make_target_are_each_named(tmp_path):
    (tmp_path / "Makefile").write_text(".PHONY: export test-fast \\\n\tinstall\nexport: install\n\techo\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "export.md").write_text("# Exporting\n\n## Options\n")
    page = tmp_path / "docs" / "page.md"
    problems = checker(repo=tmp_path).page(page, BROKEN)
    assert [p.split(": ", 1)[1] for p in problems] == [
        "link nope.md: no such file",
        "link #no-such-heading: no heading #no-such-heading in page.md",
        "link export.md#no-such-option: no heading #no-such-option in export.md",
        "`convnextpose export --variant S --out OUT --no-such-flag`: unrecognized arguments: --no-such-flag",
        "`make export VARIANT=S && make deploy`: no make target deploy",
        "`convnextpose inspect snapshot.pth.tar --variant xxs`: argument --variant: unknown variant 'xxs'; "
        "choose from XS, S, M, L",
        "`convnextpose exprot --out X`: no subcommand 'exprot'",
        "`convnextpose verify OUT [--arch host|arm64] [--no-gpu]`: verify: no option --no-gpu",
    ]
    assert all(p.startswith("docs/page.md:") for p in problems)


def _without(parser: argparse.ArgumentParser, sub: str, option: str) -> argparse.ArgumentParser:
    """The parser as it would be with one option of one subcommand removed from the code."""
    subparser = subcommands(parser)[sub]
    action = subparser._option_string_actions[option]
    subparser._remove_action(action)
    for name in action.option_strings:
        del subparser._option_string_actions[name]
    return parser


@pytest.mark.parametrize("sub, option", [("export", "--verify-gpu"), ("bench", "--synthetic-n")])
def test_the_real_pages_fail_when_a_documented_option_is_removed_from_the_cli(sub, option):
    from cli import build_parser

    check = checker(_without(build_parser(), sub, option))
    problems = [p for page in pages() for p in check.page(page)]
    assert problems and all(option in p for p in problems)


def test_an_option_no_synopsis_names_is_reported():
    from cli import build_parser

    parser = build_parser()
    subcommands(parser)["profile"].add_argument("--new-flag")
    check = checker(parser)
    for page in pages():
        check.page(page)
    assert check.undocumented() == ["convnextpose profile --new-flag"]


def test_github_slugs():
    assert slugs(["ExecuTorch (`--formats …,executorch`, opt-in for now)"]) == {
        "executorch---formats-executorch-opt-in-for-now"}
    assert slugs(["1. Is the conversion correct?", "Usage", "Usage"]) == {
        "1-is-the-conversion-correct", "usage", "usage-1"}
    assert slugs(["The [house](x.md) map"]) == {"the-house-map"}
