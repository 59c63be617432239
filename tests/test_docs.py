"""The docs check: every command in the docs is parsed, resolved or run, and every link
resolves, so the docs cannot rot (as Ray runs its docs code). No Ray; seconds.

The docs are ``README.md``, ``docs/**/*.md`` and ``bench/README.md``. Their commands:

- every line of a fenced ``bash``/``sh``/``shell``/``console`` block (backslash
  continuations joined, ``#`` comments dropped); in a block that uses ``$ `` prompts, only
  the prompted lines (the rest is output); ``$ ``-prefixed lines of any other fenced block;
- the example commands in the cells of README.md's tables (its application examples).

Each command is split at ``;``, ``&&``, ``||`` and ``|``, leading ``NAME=value``
assignments dropped, and checked by its program:

- ``rayseq ...``: parsed by the real parser (``pipelines.cli.build_parser``), without
  running it. ``train``: the recipe exists and the recipe with every ``--set`` resolves
  through ``pipelines.config.load_recipe`` (unknown keys and bad types fail). ``eval``: its
  ``--set`` keys resolve against the recipe that made the checkpoint (a ``rayseq train
  --output RUN`` anywhere in the docs, or a checkpoint path naming a recipe, as the
  quickstart's runs do), else against the recipe schema. Checkpoint and data paths are
  made by earlier commands or live outside the repository, so they are not looked for.
- ``python -m pipelines.train ...``: the same, with the parser ``pipelines.train`` builds.
- ``python bench/X.py ...`` and ``python scripts/X.py ...``: the script exists and its
  ``build_parser()`` parses the arguments.
- ``bash scripts/X.sh ...``: the script exists and its arguments parse where they go
  (``SHELL_SCRIPTS``).
- ``curl URL ...``: the method and path are a route of the served app
  (``serving.app.create_app``); under ``/v1/models/{name}/<route>`` the model ``name`` is
  made by a recipe or a documented ``train --set name=...``, its application answers
  ``<route>``, and a ``-d`` body validates against the route's request model (a ``-F``
  upload: the model takes uploads and every field is the upload model's).
- ``ray job submit ... -- COMMAND``: COMMAND is checked as above.
- anything else must match an entry of ``UNCHECKED``, which says why it is not checked.

Every command also has its repository paths checked (an argument naming a file under
``recipes/``, ``scripts/``, ``deploy/``, ...: the file must exist). The cheap commands
are then run for real (``RUN``: ``--help`` and the text dataset generators, into a
temporary folder), and a ``train`` later in the same block whose ``data.root`` is the
folder a generator wrote must find its training and validation files there.

Links: every relative link and image of the docs must name an existing file, and a
``#fragment`` a heading of the target (GitHub's anchors).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import re
import shlex
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", ROOT / "bench" / "README.md", *(ROOT / "docs").rglob("*.md")])

SHELL_LANGS = {"bash", "sh", "shell", "console", "shell-session"}
REPO_DIRS = ("recipes/", "scripts/", "bench/", "deploy/", "docs/", "tests/", "pipelines/", "models/", "serving/")
REPO_FILES = ("cluster.yaml", "pyproject.toml", "constraints.txt")
OUTPUT_FLAGS = {"--out", "--output", "-o", "--predictions", "--roll", "--spectrogram", "--sample"}

UNCHECKED = {
    ("ray", "start"): "starts a Ray head on this machine (its --autoscaling-config file is checked to exist)",
    ("ray", "status"): "asks a running cluster",
    ("ray", "job", "status"): "asks a running cluster about a job id",
    ("ray", "job", "logs"): "asks a running cluster about a job id",
    ("serve", "run"): "starts Ray Serve (the config file is checked to exist; tests/test_serve_config.py deploys it)",
    ("serve", "deploy"): "needs a running cluster (the config file is checked to exist)",
    ("serve", "status"): "asks a running cluster",
    ("docker", "build"): "needs a Docker daemon (the Dockerfile is checked to exist; "
                         "tests/test_deploy_manifests.py checks its contents)",
    ("kind", "load"): "needs a kind cluster",
    ("kubectl",): "needs a Kubernetes cluster (the manifests are checked to exist; "
                  "tests/test_deploy_manifests.py checks them against this checkout)",
    ("export",): "sets a shell variable",
}
"""Commands the check does not run or parse, by leading words, and why. A documented
command that matches no checker and no entry here fails the check."""

RUN_GENERATORS = ("sentiment", "translation", "entities", "chorales", "dialogues")
"""``rayseq generate`` datasets the check writes, with ``--size`` capped at
``RUN_MAX_SIZE`` (the files and their layout are the same at any size); ``digits``,
``speech``, ``video`` and ``digit-captions`` are parsed only (tens of seconds, or real
data from outside the repository)."""
RUN_MAX_SIZE = 200


# ---------------------------------------------------------------------------------------
# Reading the docs


@dataclass(frozen=True)
class Command:
    path: Path
    line: int
    text: str
    block: int
    """Index of the fenced block in its file (-1 outside blocks): what "earlier in the
    same block" means."""

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}: {self.text}"


def strip_comment(line: str) -> str:
    """``line`` without its shell comment (a ``#`` outside quotes, at a word's start)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
            elif char == "\\" and quote == '"':
                continue
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def join_lines(lines: list[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    """``(line number, command)`` with backslash continuations joined."""
    pending: list[str] = []
    start = 0
    for number, raw in lines:
        if not pending:
            start = number
        text = strip_comment(raw)  # a comment swallows a trailing backslash, as in a shell
        if text.endswith("\\"):
            pending.append(text[:-1].strip())
            continue
        pending.append(text.strip())
        command = " ".join(part for part in pending if part)
        pending = []
        if command:
            yield start, command


FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
TABLE_COMMAND = re.compile(r"`((?:rayseq|python) \S+ [^`]+)`")
"""A command in a table cell: ``rayseq`` or ``python`` and two or more words (not a
name such as ``rayseq serve``)."""


def extract_commands(path: Path, text: str) -> list[Command]:
    """The commands documented in one markdown file."""
    commands: list[Command] = []
    lines = text.splitlines()
    fence = None
    block: list[tuple[int, str]] = []
    blocks = 0
    for number, line in enumerate(lines, 1):
        match = FENCE.match(line)
        if fence is None:
            if match:
                fence, indent, lang, block = match.group(2), len(match.group(1)), match.group(3).lower(), []
            elif path == ROOT / "README.md" and line.lstrip().startswith("|"):
                commands += [Command(path, number, cell, -1) for cell in TABLE_COMMAND.findall(line)]
            continue
        if match and match.group(2).startswith(fence) and not match.group(3):
            if lang not in SHELL_LANGS or any(body.startswith("$ ") for _, body in block):
                chosen, keep = [], False  # the prompted lines and their continuations; the rest is output
                for n, body in block:
                    if body.startswith("$ "):
                        chosen.append((n, body[2:]))
                        keep = body.rstrip().endswith("\\")
                    elif keep:
                        chosen.append((n, body))
                        keep = body.rstrip().endswith("\\")
            else:
                chosen = block
            commands += [Command(path, n, command, blocks) for n, command in join_lines(chosen)]
            blocks += 1
            fence = None
            continue
        block.append((number, line[indent:] if line[:indent].isspace() else line.lstrip()))
    return commands


def split_command(text: str) -> list[list[str]]:
    """Shell words of each simple command in ``text`` (split at ; && || | &)."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = ""
    parts: list[list[str]] = [[]]
    for token in lexer:
        if token and set(token) <= set(";&|"):
            parts.append([])
        else:
            parts[-1].append(token)
    return [part for part in parts if part]


ENV = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


def without_env(argv: list[str]) -> list[str]:
    while argv and ENV.match(argv[0]) and argv[0] != argv[-1]:
        argv = argv[1:]
    return argv


def all_commands() -> list[Command]:
    return [command for path in DOCS for command in extract_commands(path, path.read_text())]


# ---------------------------------------------------------------------------------------
# The checker


class Problem(Exception):
    """What is wrong with a documented command (one line)."""


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace | None:
    """``parser.parse_args(argv)``, its error as a :class:`Problem`; None for ``--help``."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            return parser.parse_args(argv)
    except SystemExit as exit:
        if exit.code == 0:
            return None
        lines = err.getvalue().strip().splitlines()
        raise Problem(lines[-1] if lines else f"argparse exit {exit.code}") from None


class _Parsed(Exception):
    def __init__(self, namespace: argparse.Namespace) -> None:
        super().__init__()
        self.namespace = namespace


def parse_with_main(main, argv: list[str]) -> argparse.Namespace | None:
    """Parse ``argv`` with the parser ``main`` builds (for an entry point with no
    ``build_parser``), stopping ``main`` as soon as its arguments are parsed."""
    original = argparse.ArgumentParser.parse_args

    def stop(self, args=None, namespace=None):
        raise _Parsed(original(self, args, namespace))

    err = io.StringIO()
    with mock.patch.object(argparse.ArgumentParser, "parse_args", stop):
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                main(argv)
        except _Parsed as parsed:
            return parsed.namespace
        except SystemExit as exit:
            if exit.code == 0:
                return None
            lines = err.getvalue().strip().splitlines()
            raise Problem(lines[-1] if lines else f"exit {exit.code}") from None
    raise Problem(f"{main.__module__}.main() returned without parsing its arguments")


def load_script(path: Path):
    """A script of bench/ or scripts/ as a module (they are folders of scripts)."""
    name = "docs_check_" + "_".join(path.relative_to(ROOT).with_suffix("").parts)
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def overrides_of(argv: list[str]) -> list[str]:
    """The ``--set`` values of an argv (``--set K=V`` or ``--set=K=V``)."""
    found = []
    for i, word in enumerate(argv):
        if word == "--set" and i + 1 < len(argv):
            found.append(argv[i + 1])
        elif word.startswith("--set="):
            found.append(word[len("--set="):])
    return found


@dataclass(frozen=True)
class Trained:
    recipe: str
    overrides: tuple[str, ...]


class DocsChecker:
    """Checks documented commands against the code: one per test session (it imports
    the CLI, the recipe schema and the served app once)."""

    def __init__(self, commands: list[Command], markers: set[str]) -> None:
        from pipelines.cli import build_parser
        from pipelines.config import apply_overrides, load_recipe
        from pipelines.errors import ConfigError
        from pipelines.train import add_train_arguments
        from serving.app import create_app
        from serving.errors import UPLOAD_FORMATS
        from serving.limits import ServeLimits
        from serving.schemas import request_models

        self.rayseq = build_parser()
        self.train_module = argparse.ArgumentParser(prog="python -m pipelines.train")  # as its main() builds it
        add_train_arguments(self.train_module)
        self.load_recipe, self.apply_overrides, self.ConfigError = load_recipe, apply_overrides, ConfigError
        self.routes = [(method, route.path) for route in create_app({}, ServeLimits()).routes
                       for method in getattr(route, "methods", ()) if method != "HEAD"]
        self.bodies = request_models(ServeLimits())
        self.uploads = set(UPLOAD_FORMATS)
        self.markers = markers
        """The registered pytest markers (`scripts/test.sh -m ...`)."""
        # What the docs train: run folders and model names -> recipe and overrides.
        self.runs: dict[str, Trained] = {}
        self.models: dict[str, Trained] = {}
        for recipe in sorted((ROOT / "recipes").glob("*.yaml")):
            name = (yaml.safe_load(recipe.read_text()) or {}).get("name", "recipe")
            self.models[name] = Trained(str(recipe.relative_to(ROOT)), ())
        for command in commands:
            for argv in split_command(command.text):
                argv = self.entrypoint(without_env(argv))
                trained = self.trained(argv)
                if trained is None:
                    continue
                output = next((argv[i + 1] for i, word in enumerate(argv[:-1]) if word == "--output"), None)
                if output:
                    self.runs[os.path.normpath(output)] = trained
                name = next((o.partition("=")[2] for o in trained.overrides if o.startswith("name=")), None)
                if name:
                    self.models[name] = trained

    # -- helpers

    @staticmethod
    def entrypoint(argv: list[str]) -> list[str]:
        """The command ``ray job submit ... -- COMMAND`` runs, else ``argv``."""
        if argv[:3] == ["ray", "job", "submit"] and "--" in argv:
            return argv[argv.index("--") + 1:]
        return argv

    @staticmethod
    def trained(argv: list[str]) -> Trained | None:
        if argv[:2] == ["rayseq", "train"] or argv[:3] == ["python", "-m", "pipelines.train"]:
            positional = argv[2] if argv[0] == "rayseq" else argv[3] if len(argv) > 3 else None
            if positional and not positional.startswith("-"):
                return Trained(positional, tuple(overrides_of(argv)))
        return None

    def resolve(self, recipe: str, overrides: list[str]) -> None:
        path = ROOT / recipe
        if not path.is_file():
            raise Problem(f"recipe not found: {recipe}")
        try:
            self.load_recipe(path, overrides)
        except self.ConfigError as err:
            raise Problem(f"{recipe} with {' '.join('--set ' + o for o in overrides) or 'no --set'}: {err}") from None

    def recipe_of_checkpoint(self, checkpoint: str) -> Trained | None:
        run = os.path.normpath(checkpoint)
        if Path(run).name == "checkpoint":
            run = str(Path(run).parent)
        if run in self.runs:
            return self.runs[run]
        for part in reversed(Path(run).parts):  # the quickstart's runs/<output>/<recipe name>/
            if part in self.models:
                return self.models[part]
        return None

    def app_of_model(self, name: str):
        """The application of the served model ``name`` (a recipe's or a documented run's)."""
        from pipelines import apps

        trained = self.models.get(name)
        if trained is None:
            raise Problem(f"no recipe or documented `rayseq train --set name=...` makes a model named {name!r}")
        self.resolve(trained.recipe, list(trained.overrides))
        return apps.app_for(self.load_recipe(ROOT / trained.recipe, list(trained.overrides)))

    # -- the checks

    def check(self, command: Command) -> list[str]:
        """Every problem of ``command`` (empty: it checks out)."""
        problems = []
        for argv in split_command(command.text):
            argv = without_env(argv)
            try:
                self.check_paths(argv)
                self.check_argv(argv)
            except Problem as problem:
                problems.append(f"{command.where()}\n    {problem}")
        return problems

    @staticmethod
    def check_paths(argv: list[str]) -> None:
        """Repository files a command names exist (not those it writes: ``--out`` and the like)."""
        for previous, word in zip(argv, argv[1:]):
            if previous in OUTPUT_FLAGS:
                continue
            value = word.partition("=")[2] if word.startswith("-") and "=" in word else word
            value = value.replace("$PWD/", "")
            if value.startswith(REPO_DIRS) or value in REPO_FILES:
                if not (ROOT / value).exists():
                    raise Problem(f"{value} does not exist in the repository")

    def check_argv(self, argv: list[str]) -> None:
        program = argv[0]
        if program == "rayseq":
            return self.check_rayseq(argv[1:])
        if argv[:3] == ["python", "-m", "pipelines.train"]:
            args = parse(self.train_module, argv[3:])
            if args is not None:
                self.resolve(args.recipe, args.overrides)
            return
        if program in ("python", "python3") and len(argv) > 1 and argv[1].endswith(".py"):
            return self.check_script(argv[1], argv[2:])
        if program in ("bash", "sh") and len(argv) > 1 and argv[1].endswith(".sh"):
            return self.check_shell_script(argv[1], argv[2:])
        if program == "curl":
            return self.check_curl(argv[1:])
        if argv[:3] == ["ray", "job", "submit"]:
            if "--" not in argv:
                raise Problem("ray job submit without `-- ENTRYPOINT`")
            return self.check_argv(self.entrypoint(argv))
        if any(tuple(argv[:len(prefix)]) == prefix for prefix in UNCHECKED):
            return
        raise Problem(f"no check for `{' '.join(argv[:2])}`: check it here, or list it in UNCHECKED with the reason")

    def check_rayseq(self, argv: list[str]) -> None:
        args = parse(self.rayseq, argv)
        if args is None:
            return
        if args.command == "train":
            self.resolve(args.recipe, args.overrides)
        elif args.command == "eval":
            trained = self.recipe_of_checkpoint(str(args.checkpoint))
            if trained is not None:
                self.resolve(trained.recipe, [*trained.overrides, *args.overrides])
            else:
                try:
                    self.apply_overrides({}, args.overrides)
                except self.ConfigError as err:
                    raise Problem(str(err)) from None

    def check_script(self, script: str, argv: list[str]) -> None:
        path = ROOT / script
        if not path.is_file():
            raise Problem(f"{script} does not exist")
        module = load_script(path)
        if not hasattr(module, "build_parser"):
            raise Problem(f"{script} has no build_parser(): give it one so its documented flags can be parsed")
        parser = module.build_parser()
        parser.prog = f"python {script}"
        parse(parser, argv)

    def check_shell_script(self, script: str, argv: list[str]) -> None:
        if not (ROOT / script).is_file():
            raise Problem(f"{script} does not exist")
        if script not in SHELL_SCRIPTS:
            raise Problem(f"no argument check for {script}: add it to SHELL_SCRIPTS")
        SHELL_SCRIPTS[script](self, argv)

    def check_curl(self, argv: list[str]) -> None:
        takes_value = {"-H", "--header", "-d", "--data", "--data-raw", "-F", "--form", "-o", "--output",
                       "-X", "--request", "-u", "--user"}
        url, method, data, form, i = None, None, None, [], 0
        while i < len(argv):
            word = argv[i]
            if word in takes_value:
                value = argv[i + 1] if i + 1 < len(argv) else ""
                if word in ("-d", "--data", "--data-raw"):
                    data = value
                elif word in ("-F", "--form"):
                    form.append(value)
                elif word in ("-X", "--request"):
                    method = value
                i += 2
                continue
            if not word.startswith("-"):
                url = word
            i += 1
        if url is None:
            raise Problem("curl without a URL")
        path = urlsplit(url if "://" in url else "http://" + url).path or "/"
        method = method or ("POST" if data is not None or form else "GET")
        route = next((template for verb, template in self.routes
                      if verb == method and re.fullmatch(re.sub(r"\{[^/]+\}", "[^/]+", template), path)), None)
        if route is None:
            served = ", ".join(f"{verb} {template}" for verb, template in self.routes)
            raise Problem(f"the app serves no {method} {path} (it serves {served})")
        match = re.fullmatch(r"/v1/models/([^/]+)/([^/]+)", path)
        if not match:
            return
        name, answers = match.groups()
        app = self.app_of_model(name)
        if app.serve.route.name != answers:
            raise Problem(f"model {name!r} ({app.name}) answers /{app.serve.route.name}, not /{answers}")
        if data is not None:
            if app.medium in self.uploads:
                raise Problem(f"model {name!r} takes {app.medium} uploads (-F file=@...), not a JSON body")
            try:
                json.loads(data)
            except ValueError as err:
                raise Problem(f"-d is not JSON: {err}") from None
            from pydantic import ValidationError

            try:
                self.bodies.body(app.serve.route, "text").model_validate_json(data)
            except ValidationError as err:
                wrong = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in err.errors())
                raise Problem(f"the {answers} body of {app.name}: {wrong}") from None
        if form:
            if app.medium not in self.uploads:
                raise Problem(f"model {name!r} takes a JSON body, not uploads (-F)")
            fields = self.bodies.body(app.serve.route, app.medium).model_fields
            for part in form:
                field = part.partition("=")[0]
                if field not in fields:
                    raise Problem(f"-F {field}: the {answers} upload form has no such field (it has "
                                  f"{', '.join(fields)})")


def check_quickstart(checker: DocsChecker, argv: list[str]) -> None:
    from pipelines import quickstart

    args = parse_with_main(quickstart.main, argv)
    if args is not None:
        for recipe in args.recipes or quickstart.RECIPES:
            checker.resolve(recipe, args.overrides)


def check_gpu_check(checker: DocsChecker, argv: list[str]) -> None:
    checker.check_script("scripts/gpu_check.py", argv)


def check_pytest_args(checker: DocsChecker, argv: list[str]) -> None:
    """``scripts/test.sh`` hands its arguments to pytest (but a lone ``fast``, its mode for
    the tier without Ray): markers must be registered and test paths must exist."""
    if argv == ["fast"]:
        return
    markers = checker.markers
    i = 0
    while i < len(argv):
        if argv[i] == "-m" and i + 1 < len(argv):
            unknown = set(re.findall(r"\w+", argv[i + 1])) - markers - {"and", "or", "not"}
            if unknown:
                raise Problem(f"-m {argv[i + 1]!r}: unknown marker(s) {', '.join(sorted(unknown))} "
                              f"(registered: {', '.join(sorted(markers))})")
            i += 2
            continue
        if not argv[i].startswith("-") and not (ROOT / argv[i].split("::")[0]).exists():
            raise Problem(f"no test path {argv[i]}")
        i += 1


def check_no_args(checker: DocsChecker, argv: list[str]) -> None:
    if argv:
        raise Problem(f"takes no arguments, got {' '.join(argv)}")


SHELL_SCRIPTS = {
    "scripts/quickstart.sh": check_quickstart,
    "scripts/test.sh": check_pytest_args,
    "scripts/gpu_check.sh": check_gpu_check,
    "scripts/setup.sh": check_no_args,
}
"""Where each shell script's arguments go (``scripts/X.sh``)."""


# ---------------------------------------------------------------------------------------
# Links


HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def prose_lines(text: str, *, code: bool = False) -> Iterator[tuple[int, str]]:
    """Lines outside fenced blocks, inline code removed (``code``: kept)."""
    fence = None
    for number, line in enumerate(text.splitlines(), 1):
        match = FENCE.match(line)
        if fence is None and match:
            fence = match.group(2)
            continue
        if fence is not None:
            if match and match.group(2).startswith(fence) and not match.group(3):
                fence = None
            continue
        yield number, line if code else re.sub(r"`[^`]*`", "", line)


def anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lowercased, punctuation but ``-`` and ``_`` dropped,
    spaces to ``-``, repeats numbered."""
    seen: dict[str, int] = {}
    found = set()
    for _, line in prose_lines(text, code=True):
        match = HEADING.match(line)
        if not match:
            continue
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", match.group(2))
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def check_links(path: Path, text: str) -> list[str]:
    problems = []
    for number, line in prose_lines(text):
        for target in LINK.findall(line):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            file, _, fragment = target.partition("#")
            resolved = (path.parent / file).resolve() if file else path
            where = f"{path.relative_to(ROOT)}:{number}: ({target})"
            if not resolved.exists():
                problems.append(f"{where}\n    {file} does not exist")
            elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved.read_text()):
                problems.append(f"{where}\n    {resolved.relative_to(ROOT)} has no heading #{fragment}")
    return problems


# ---------------------------------------------------------------------------------------
# Running the cheap commands


def runnable(argv: list[str]) -> bool:
    if argv[0] != "rayseq":
        return False
    return "--help" in argv or "-h" in argv or (argv[1:2] == ["generate"] and argv[2:3] != [] and
                                               argv[2] in RUN_GENERATORS)


@contextlib.contextmanager
def working_directory(path: Path) -> Iterator[None]:
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def run_block(checker: DocsChecker, commands: list[Command], workdir: Path) -> tuple[int, list[str]]:
    """Run the runnable commands of one block in ``workdir`` (absolute paths moved under
    it); check the block's later ``train`` commands against the folders they wrote."""
    from pipelines.cli import main

    written: dict[str, Path] = {}
    ran, problems = 0, []
    for command in commands:
        for argv in split_command(command.text):
            argv = without_env(argv)
            if runnable(argv):
                moved = [str(workdir / word.lstrip("/")) if word.startswith("/") else word for word in argv[1:]]
                if "--size" in moved[:-1]:
                    at = moved.index("--size") + 1
                    moved[at] = str(min(int(moved[at]), RUN_MAX_SIZE))
                out = io.StringIO()
                with working_directory(workdir), contextlib.redirect_stdout(out), \
                        contextlib.redirect_stderr(io.StringIO()):
                    try:
                        status = main(moved)
                    except SystemExit as exit:
                        status = exit.code
                ran += 1
                if status != 0:
                    problems.append(f"{command.where()}\n    exited {status}")
                elif argv[1] == "generate" and not {"-h", "--help"} & set(argv):
                    summary = json.loads(out.getvalue().strip().splitlines()[-1])
                    written[os.path.normpath(argv[3])] = Path(summary["output"])
                continue
            trained = checker.trained(argv)
            if trained is None or not written:
                continue
            recipe = checker.load_recipe(ROOT / trained.recipe, list(trained.overrides))
            data = recipe.data
            if data.root is None or os.path.normpath(data.root) not in written:
                continue
            folder = workdir / written[os.path.normpath(data.root)]
            suffix = f".{data.source_lang}" if data.format == "parallel" else ""
            for split in (data.train, data.valid):
                if split and not (folder / (split + suffix)).exists():
                    problems.append(f"{command.where()}\n    data.root={data.root}: the generator wrote no "
                                    f"{split + suffix} there (it wrote {sorted(p.name for p in folder.iterdir())})")
    return ran, problems


# ---------------------------------------------------------------------------------------
# Tests


COMMANDS = all_commands()


@pytest.fixture(scope="module")
def markers(pytestconfig) -> set[str]:
    return {re.match(r"\w+", line).group() for line in pytestconfig.getini("markers")}


@pytest.fixture(scope="module")
def checker(markers) -> DocsChecker:
    return DocsChecker(COMMANDS, markers)


def test_readme_has_exactly_the_two_commands():
    """The project rule: the README runs the main job with one command and the tests
    with another; everything else lives in docs/ (its table only names examples)."""
    fenced = [c.text for c in COMMANDS if c.path == ROOT / "README.md" and c.block >= 0]
    assert fenced == ["bash scripts/quickstart.sh", "bash scripts/test.sh"]


def test_docs_have_commands():
    """The extraction finds the docs' commands (a broken extractor would pass everything)."""
    by_file = {path: [c for c in COMMANDS if c.path == path] for path in DOCS}
    assert len(COMMANDS) > 150
    for page in (ROOT / "docs" / "apps").glob("*.md"):
        assert any(c.text.startswith("rayseq train ") for c in by_file[page]), page


@pytest.mark.parametrize("path", DOCS, ids=lambda path: str(path.relative_to(ROOT)))
def test_documented_commands_check_out(checker, path):
    problems = [problem for command in COMMANDS if command.path == path for problem in checker.check(command)]
    assert not problems, "documented commands that do not check out:\n" + "\n".join(problems)


def test_unchecked_entries_are_used():
    """Every UNCHECKED entry is needed by some documented command (no stale excuses)."""
    words = [without_env(argv) for command in COMMANDS for argv in split_command(command.text)]
    unused = [prefix for prefix in UNCHECKED if not any(tuple(argv[:len(prefix)]) == prefix for argv in words)]
    assert not unused, f"UNCHECKED entries no documented command needs: {unused}"


def test_cheap_commands_run(checker, tmp_path):
    blocks: dict[tuple[Path, int], list[Command]] = {}
    for command in COMMANDS:
        blocks.setdefault((command.path, command.block), []).append(command)
    ran, problems = 0, []
    for index, commands in enumerate(blocks.values()):
        workdir = tmp_path / str(index)
        workdir.mkdir()
        count, found = run_block(checker, commands, workdir)
        ran, problems = ran + count, problems + found
    assert not problems, "documented commands that fail when run:\n" + "\n".join(problems)
    assert ran >= 7, f"only {ran} documented commands were run"


@pytest.mark.parametrize("path", DOCS, ids=lambda path: str(path.relative_to(ROOT)))
def test_links_resolve(path):
    problems = check_links(path, path.read_text())
    assert not problems, "broken links:\n" + "\n".join(problems)


# -- the check can fail


BROKEN = """\
Text.

```bash
rayseq train recipes/demo_sentiment.yaml --outptu runs/x
rayseq train recipes/no_such_recipe.yaml
rayseq train recipes/demo_sentiment.yaml --set train.max_stepz=5
rayseq train recipes/demo_sentiment.yaml --set train.max_steps=many
python bench/pipeline.py --rounds 2 --no-such-flag
bash scripts/test.sh -m "not gpu"
frobnicate --now
curl -s localhost:8000/v1/models/demo_sentiment/generate -d '{"inputs": ["x"]}'
curl -s localhost:8000/v1/models/demo_sentiment/classify -H 'content-type: application/json' -d '{"texts": ["x"]}'
curl -s localhost:8000/v2/everything
rayseq train recipes/demo_sentiment.yaml --output runs/ok
rayseq eval runs/ok/checkpoint --data x --set decode.beam_sise=4
```

[a page](no-such-page.md), [a heading](README.md#no-such-heading), [fine](README.md#guides)
"""


def test_the_check_fails_on_broken_docs(markers):
    page = ROOT / "docs" / "broken-example.md"  # a path inside the repository; never written
    commands = extract_commands(page, BROKEN)
    assert [c.line for c in commands] == list(range(4, 16))
    checker = DocsChecker(commands, markers)  # so runs/ok is known as this snippet's run
    problems = {c.line: checker.check(c) for c in commands}
    expected = {
        4: "unrecognized arguments: --outptu",
        5: "recipes/no_such_recipe.yaml does not exist",
        6: "unknown key 'train.max_stepz'",
        7: "train.max_steps: expected int, got 'many'",
        8: "unrecognized arguments: --no-such-flag",
        9: "unknown marker(s) gpu",
        10: "no check for `frobnicate --now`",
        11: "answers /classify, not /generate",
        12: "Extra inputs are not permitted",
        13: "the app serves no GET /v2/everything",
        14: None,
        15: "unknown key 'decode.beam_sise'",
    }
    for line, fragment in expected.items():
        found = problems[line]
        if fragment is None:
            assert found == [], found
        else:
            assert len(found) == 1 and fragment in found[0], (line, found)
            assert found[0].startswith(f"docs/broken-example.md:{line}: "), found[0]
    links = check_links(ROOT / "docs" / "README.md", BROKEN)
    assert len(links) == 2
    assert "docs/README.md:18: (no-such-page.md)\n    no-such-page.md does not exist" in links[0]
    assert "has no heading #no-such-heading" in links[1]


def test_extraction_reads_shell_blocks_as_a_shell_would():
    text = """\
```console
$ rayseq generate sentiment /tmp/s --size 50 \\
    --seed 1   # a comment
{"output": "/tmp/s"}
```

```bash
curl -s localhost:8000/v1/models -d '{"inputs": ["#Person1#: hi"]}'  # trailing
ray job status JOB; ray job logs --follow JOB
```

```
$ rayseq --help
rayseq train RECIPE.yaml   (a synopsis, not a command)
```
"""
    commands = extract_commands(ROOT / "docs" / "x.md", text)
    assert [(c.line, c.text) for c in commands] == [
        (2, "rayseq generate sentiment /tmp/s --size 50 --seed 1"),
        (8, """curl -s localhost:8000/v1/models -d '{"inputs": ["#Person1#: hi"]}'"""),
        (9, "ray job status JOB; ray job logs --follow JOB"),
        (13, "rayseq --help"),
    ]
    assert split_command(commands[2].text) == [["ray", "job", "status", "JOB"],
                                               ["ray", "job", "logs", "--follow", "JOB"]]
