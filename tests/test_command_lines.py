"""The command lines as users write them: every config field set from the command line, every ``fusionjax-*``
command written in the docs parsed by the installed command's own parser, and what the commands print.

Parsing runs each command's ``parse`` (the function its ``main`` parses with) and nothing else, so these tests need
no data. The commands that run (``--verify``, ``fusionjax-eval``) use tiny models.
"""

import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import ml_collections
import pytest

from fusionjax import demo, predict
from fusionjax.claims import cli as claims_cli
from fusionjax.convert import cli as convert_cli
from fusionjax.export import cli as export_cli
from fusionjax.train import cli as train_cli
from fusionjax.train import errors
from test_export_cli import workdir  # noqa: F401 -- a digits workdir holding its initial state as step 0

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = Path(sys.executable).parent
# Each command's parse-only entry (the one its main parses with), given the whole command line, the program's name
# first. A documented or installed command without one fails the tests below: add it here.
PARSERS = {
    "fusionjax-train": train_cli.parse_train,
    "fusionjax-eval": train_cli.parse_eval,
    "fusionjax-plot": train_cli.parse_plot,
    "fusionjax-convert": lambda argv: convert_cli.parse(argv[1:]),
    "fusionjax-export": lambda argv: export_cli.parse(argv[1:]),
    "fusionjax-claims": lambda argv: claims_cli.parse(argv[1:]),
    "fusionjax-demo": lambda argv: demo.parse(argv[1:]),
    "fusionjax-predict": lambda argv: predict.parse(argv[1:]),
}


# ----------------------------------------------------------------------------------------------------------------
# Every config field from the command line.


def _leaves(config: ml_collections.ConfigDict, prefix: str = ""):
    """(dotted key, type, value) of every field; a placeholder's type is its declared one, not NoneType."""
    for key in config.keys():
        value = config[key]
        if isinstance(value, ml_collections.ConfigDict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", config.get_type(key), value


def _other_value(kind: type, value):
    """A value of type ``kind`` that differs from ``value`` (None for an unset placeholder)."""
    if kind is bool:
        return not value
    if kind is int:
        return 7 if value is None else value + 7
    if kind is float:
        return 0.25 if value is None else value + 0.25
    if kind is str:
        return "unset_before" if value is None else f"{value}_changed"
    if kind is tuple:
        return (3, 5) if not value else tuple(v + 1 for v in value)
    raise AssertionError(f"a config field of type {kind} that this test cannot set: add it to _other_value")


def _flag(key: str, value) -> str:
    text = {bool: lambda v: str(v).lower(), tuple: lambda v: str(tuple(v))}.get(type(value), str)(value)
    return f"--config.{key}={text}"


def _overrides(config) -> dict:
    return {key: _other_value(kind, value) for key, kind, value in _leaves(config)}


def _held(config, key: str):
    value = config
    for part in key.split("."):
        value = value[part]
    return tuple(value) if isinstance(value, (list, tuple)) else value


@pytest.mark.parametrize("name", train_cli.shipped_configs())
def test_every_field_of_every_shipped_config_is_set_from_the_command_line(name):
    """``--config.FIELD=VALUE`` for every field at once (placeholders, tuples, ``model_overrides.*`` included),
    through fusionjax-train's own parsing: the parsed config holds each value, in the field's type."""
    overrides = _overrides(train_cli.load_config(name))
    assert {"data_dir", "manual_dir", "eval_split", "image_size", "init_from", "piecewise_epochs"} <= set(overrides)
    argv = ["fusionjax-train", "--config", name, "--workdir", "runs/x", *(_flag(k, v) for k, v in overrides.items())]
    config = train_cli.parse_train(argv).config
    for key, value in overrides.items():
        assert _held(config, key) == value and type(_held(config, key)) is type(value), key


def test_a_new_model_override_and_a_config_file_path_parse():
    path = str(train_cli.config_path("digits"))
    config = train_cli.parse_train(["fusionjax-train", f"--config={path}", "--workdir=runs/x",
                                    "--config.model_overrides.drop_path=0.1", "--config.image_size=16"]).config
    assert config.model_overrides.drop_path == 0.1 and config.image_size == 16


def test_a_field_without_a_type_is_refused_naming_the_fix(tmp_path):
    """A config of the user's own with ``field = None``: the error says to declare a typed placeholder."""
    path = tmp_path / "mine.py"
    path.write_text("from fusionjax.configs import common\n\n\ndef get_config():\n    config = common.get_config()\n"
                    "    config.pretrained_dir = None\n    return config\n")
    with pytest.raises(errors.ConfigError, match=r"--config.pretrained_dir: the config sets this field to a plain "
                                                 r"None.*config_dict.placeholder\(str\)"):
        train_cli.parse_train(["fusionjax-train", "--config", str(path), "--workdir", "w",
                               "--config.pretrained_dir=/weights"])


@pytest.mark.parametrize("name", train_cli.shipped_configs())
def test_a_workdirs_stored_config_accepts_every_override(name, tmp_path):
    """fusionjax-eval reads a run's config.json back (``workdir.load_workdir_config``) and overrides fields of it:
    every field of the stored config takes a new value of its type."""
    from fusionjax.train import workdir

    config = train_cli.load_config(name)
    with workdir.claim_workdir(tmp_path, config):
        pass
    stored = workdir.load_workdir_config(tmp_path)
    overrides = _overrides(config)
    stored.update_from_flattened_dict(overrides)
    for key, value in overrides.items():
        assert _held(stored, key) == value, key


# ----------------------------------------------------------------------------------------------------------------
# Every documented command parses.

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^\s*```")
INLINE = re.compile(r"`([^`]+)`")
COMMAND = re.compile(r"^fusionjax-[a-z]+$")
ENVIRONMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
ELIDED = ("...", "…")
OPTIONAL = re.compile(r"(?:(?<=\s)|^)\[([^\[\]]*)\](?=\s|$)")  # [--flag VALUE] as a word, not train[:90%]


def _command_texts(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of each shell line in fenced or indented code, and of each inline code span (which may
    wrap onto the paragraph's next line)."""
    found, fenced, continued, paragraph = [], False, "", []
    for number, line in enumerate([*path.read_text().splitlines(), ""], 1):
        if fenced or FENCE.match(line) or line.startswith("    ") or not line.strip():
            found += [(paragraph[0][0], span) for span in INLINE.findall(" ".join(t for _, t in paragraph))]
            paragraph = []
        else:
            paragraph.append((number, line.strip()))
            continue
        if FENCE.match(line):
            fenced = not fenced
        elif fenced or line.startswith("    "):
            continued += line.strip()
            if continued.endswith("\\"):
                continued = continued[:-1] + " "
                continue
            found.append((number, continued))
            continued = ""
    return found


def _commands(text: str) -> list[str]:
    """The ``fusionjax-*`` commands in a shell line, each as written (``a && b``, ``a | b``, ``VAR=x a``)."""
    commands = []
    for segment in re.split(r"&&|\|\||;|\s\|\s|\s&(?:\s|$)", text):
        words = segment.split("#")[0].split() if " #" in segment else segment.split()
        while words and ENVIRONMENT.match(words[0]):
            words = words[1:]
        # A bare name, or one with elided arguments (fusionjax-train …), is a mention, not a command line.
        if len([w for w in words if w not in ELIDED]) > 1 and COMMAND.match(words[0]):
            commands.append(" ".join(words))
    return commands


def _expansions(command: str) -> list[list[str]]:
    """A usage synopsis as the command lines it stands for: without its [optional] parts, with all of them, and
    each ``a|b`` alternative once (the others at their first); ``...`` (repeat or elided) is dropped."""
    forms = {OPTIONAL.sub("", command), OPTIONAL.sub(lambda m: m[1], command)}
    lines = []
    for form in sorted(forms):
        words = [w for w in shlex.split(form) if w not in ELIDED]
        choices = [w.split("|") if "|" in w and not w.startswith("|") else [w] for w in words]
        for position, alternatives in enumerate(choices):
            for alternative in alternatives[1:] if len(alternatives) > 1 else []:
                lines.append([c[0] if i != position else alternative for i, c in enumerate(choices)])
        lines.append([c[0] for c in choices])
    return lines


def documented_commands() -> list[tuple[str, list[str]]]:
    commands = []
    for path in DOCUMENTS:
        for number, text in _command_texts(path):
            for command in _commands(text):
                commands += [(f"{path.relative_to(ROOT)}:{number}", argv) for argv in _expansions(command)]
    return commands


def test_documented_commands_are_found_in_code_blocks_inline_code_and_synopses():
    """The finder against commands known to be in the docs, including the synopsis forms it expands."""
    found = {" ".join(argv) for _, argv in documented_commands()}
    assert "fusionjax-train --config configs/digits.py --workdir runs/digits" in found  # README, fenced
    assert "fusionjax-claims --out DIR --quick --only A5,M3" in found  # README, inline synopsis with optionals
    assert "fusionjax-claims --out DIR" in found
    assert "fusionjax-eval --workdir runs/digits --checkpoint best --ema --split NAME --batch_size 256" in found
    assert "fusionjax-eval --workdir runs/digits --checkpoint STEP --ema --split NAME --batch_size 256" in found
    assert "fusionjax-train --config imagenet_resnet50 --workdir DIR --config.data_dir=D" in found  # wraps a line
    assert "fusionjax-convert --from keras ResNet50V2 resnet50v2.weights.h5 --out converted/resnet50v2 --verify" \
           in found  # docs/converting.md, an indented code block


def _parses(argv: list[str], capsys) -> str | None:
    """None when ``argv`` parses; otherwise what its parser said."""
    try:
        PARSERS[argv[0]](argv)
    except SystemExit as exit:
        return f"exit status {exit.code}: {capsys.readouterr().err.strip()}"
    except Exception as error:  # the parser's own error (UserError, flags.Error ...), reported with the command
        return f"{type(error).__name__}: {error}"
    return None


def test_every_documented_command_parses(capsys):
    """Each command line in README.md and docs/ (and each form of a usage synopsis) is accepted by its command's
    own parser; ``--help`` runs the installed command, which must print its usage and no error."""
    failures, helps = [], []
    for where, argv in documented_commands():
        if argv[0] not in PARSERS:
            failures.append(f"{where}: {argv[0]} has no entry in PARSERS")
        elif "--help" in argv or "-h" in argv:
            helps.append(argv)
        elif problem := _parses(argv, capsys):
            failures.append(f"{where}: {shlex.join(argv)}\n    {problem}")
    for argv in helps:
        result = subprocess.run([str(SCRIPTS / argv[0]), *argv[1:]], capture_output=True, text=True, timeout=120)
        if not re.search(r"usage|USAGE|\bflags:", result.stdout) or "error" in result.stderr.lower():
            failures.append(f"{shlex.join(argv)} printed no usage:\n{result.stdout}{result.stderr}")
    assert not failures, ("\n".join(failures) + "\nWrite each command whole, e.g. `fusionjax-eval --workdir DIR "
                          "--ema` rather than `fusionjax-eval --ema` (placeholder values such as DIR are fine).")


def test_a_command_line_that_does_not_parse_is_caught(capsys):
    """The check itself: a wrong flag, a missing required flag and an unknown config field are reported."""
    assert "UnrecognizedFlagError" in _parses(["fusionjax-eval", "--workdir", "w", "--chekpoint", "best"], capsys)
    assert "--workdir" in _parses(["fusionjax-train", "--config", "digits"], capsys)
    assert "no such config field" in _parses(["fusionjax-train", "--config", "digits", "--workdir", "w",
                                              "--config.learning_rat=1"], capsys)
    assert "exit status 2" in _parses(["fusionjax-export", "runs/digits", "--out", "x.onnx"], capsys)  # --format


def test_every_documented_command_is_an_installed_script():
    """pyproject's [project.scripts] names every documented command, and PARSERS every script."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    documented = {argv[0] for _, argv in documented_commands()}
    assert documented <= set(scripts), documented - set(scripts)
    assert set(scripts) <= set(PARSERS), set(scripts) - set(PARSERS)


# ----------------------------------------------------------------------------------------------------------------
# What the commands print.

READ_ONLY_NOTICE = "Given directory is read only"


def run_command(*arguments) -> subprocess.CompletedProcess:
    """An installed command, as a user runs it."""
    return subprocess.run([str(SCRIPTS / arguments[0]), *map(str, arguments[1:])], capture_output=True, text=True,
                          timeout=300)


def test_eval_prints_its_result_and_no_orbax_read_only_warning(workdir):
    result = run_command("fusionjax-eval", "--workdir", workdir[0])
    assert result.returncode == 0, result.stderr
    assert re.search(r"step 0: top-1 [\d.]+, top-5 [\d.]+, loss [\d.]+", result.stdout), result.stdout
    assert READ_ONLY_NOTICE not in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_export_verify_prints_the_error_it_measured_and_its_tolerance(workdir, tmp_path):
    """``--verify`` prints what it checked: the numbers on the card, and no Orbax read-only warning."""
    out = tmp_path / "digits.onnx"
    result = run_command("fusionjax-export", workdir[0], "--format", "onnx", "--out", out, "--verify")
    assert result.returncode == 0, result.stderr
    assert READ_ONLY_NOTICE not in result.stderr and "Traceback" not in result.stderr, result.stderr
    printed = re.search(r"= ([\d.e+-]+) \(tolerance ([\d.e+-]+)\) on normal\(0, 1\) images, batch sizes ([\d, ]+)",
                        result.stdout)
    assert printed, result.stdout
    card = json.loads(Path(f"{out}.card.json").read_text())["verification"]
    assert float(printed[1]) == pytest.approx(card["relative_error"], rel=1e-3)
    assert float(printed[2]) == card["tolerance"]
    assert [int(b) for b in printed[3].split(",")] == card["batch_sizes"]


def test_convert_verify_prints_every_stage_error_and_the_tolerances(tmp_path, capsys):
    """``--verify`` prints each stage's error against torchvision and the tolerances: the numbers on the card."""
    import torch

    from fusionjax import convert
    from fusionjax.torch_compat import import_torchvision

    torchvision = import_torchvision()
    weights, out = tmp_path / "resnet18.pth", tmp_path / "converted"
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), weights)
    assert convert.main(["resnet18", str(weights), "--out", str(out), "--verify"]) == 0
    printed = capsys.readouterr().out
    card = json.loads((out / "card.json").read_text())["verification"]
    tolerances = re.search(r"tolerance rel ≤ ([\d.e+-]+) \(logits also max\|Δ\| ≤ ([\d.e+-]+)\)", printed)
    assert tolerances, printed
    assert (float(tolerances[1]), float(tolerances[2])) == (card["rtol"], card["atol"])
    rows = {m[1]: (float(m[2]), float(m[3])) for m in re.finditer(
        r"^  (\S+)\s+\([\d, ]+\)\s+([\d.e+-]+)\s+[\d.e+-]+\s+([\d.e+-]+)  (?:yes|NO)$", printed, re.MULTILINE)}
    assert rows.keys() == card["stages"].keys()
    for stage, (max_abs, rel) in rows.items():
        assert max_abs == pytest.approx(card["stages"][stage]["max_abs"], rel=1e-3), stage
        assert rel == pytest.approx(card["stages"][stage]["rel"], rel=1e-3), stage
