"""Command-line plumbing shared by the jobs: config resolution and one-line failures."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any, Callable, Mapping

from analysis.config import ConfigError, make_config, parse_override, read_config_section
from analysis.data.names import make_display, make_log_safe


class ArgumentParser(argparse.ArgumentParser):
    """argparse that fails in one line naming the value and what is allowed (no usage dump), and takes only whole
    flag names: a prefix (--layer for --layers) would silently stand for whichever flag it begins today."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="YAML", help="a YAML file with the same sections as configs/default.yaml")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set any config key of this job (value read as YAML); repeatable",
    )


def resolve_config(
    cls: type, section: str, args: argparse.Namespace, flags: Mapping[str, Any], nested: Mapping[str, str] | None = None
):
    """Defaults <- --config file <- explicit flags (those not None) <- --set key=value.

    nested: {field: other section} -- the field takes that whole section (report's `dataset_issues`: report_qa), and
    `--set other_section.key=value` sets a key of it."""
    values = read_config_section(args.config, section)
    for field, other in (nested or {}).items():
        values[field] = read_config_section(args.config, other)
    values.update({k: v for k, v in flags.items() if v is not None})
    names = {f.name for f in dataclasses.fields(cls)}
    sections = {other: field for field, other in (nested or {}).items()}
    for text in args.overrides:
        key, value = parse_override(text)
        head, dot, rest = key.partition(".")
        if dot and head in sections:
            values[sections[head]] = {**values[sections[head]], rest: value}
            continue
        if key not in names:
            raise ConfigError(
                f"--set {key}: unknown config key; valid keys: {', '.join(sorted(names))}"
                + "".join(f", {other}.KEY" for other in sections)
            )
        values[key] = value
    return make_config(cls, values)


def check_utf8_path(what: str, path) -> None:
    """pyarrow (and DuckDB, Polars) open only paths that are valid UTF-8: refuse another one at start, in one line."""
    text = os.fspath(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(
            f"{what} '{make_display(text)}': the path holds bytes that are not UTF-8, and Parquet "
            "readers cannot open such a path; choose one without them"
        ) from None


def parse_int(flag: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{flag}: {text!r} is not an integer") from None


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "unusable input", reported in one line rather than a traceback."""
    errors: list[type[BaseException]] = [ConfigError]
    for module, name in (
        ("analysis.data.discovery", "DataError"),
        ("analysis.model.vgg16", "WeightsError"),
        ("analysis.data.decoding", "DecodeError"),
        ("analysis.store.tables", "WriteError"),
    ):
        try:
            errors.append(getattr(__import__(module, fromlist=[name]), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def run_main(
    parse: Callable[[list[str] | None], Any], main: Callable[[Any], int], prog: str, argv: list[str] | None = None
) -> int:
    """parse(argv) -> cfg; main(cfg) -> exit code. Unusable input exits 2 with one line on stderr."""
    errors = user_errors()
    try:
        cfg = parse(argv)
        return main(cfg)
    except errors as e:
        reason = getattr(e, "reason", None) or str(e)
        print(f"{prog}: error: {make_log_safe(reason)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
