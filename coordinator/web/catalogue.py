"""The operator's model catalogue page: ``/console/operator/catalogue``.

Every entry with its live node count and whether the coordinator counts its tokens, the models
served but not catalogued, the recent versions (who changed what, when), and forms to add, edit
and remove entries and aliases. Every change goes through :mod:`coordinator.catalogue.edits`,
like the operator API's, so an entry is validated one way wherever it is edited.

Each form carries the catalogue version the page showed; a change is refused with 409 when
another version is in force by then (someone else changed the catalogue meanwhile), so a
person never overwrites an edit they did not see. A refused form is shown again as typed, with
the reason next to the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from litestar import Request, Response, get, post
from litestar.response import Template
from sqlalchemy import select

from coordinator.api.context import Services, services_of
from coordinator.catalogue import (
    CatalogueBusy,
    CatalogueChange,
    CatalogueEntry,
    CatalogueError,
    CatalogueStale,
    InvalidEntry,
    ModelNotInCatalogue,
    PutEntry,
    add_aliases,
    catalogue_history,
    checked_entry,
    remove_aliases,
    remove_model,
    store_change,
)
from coordinator.db.models import Account, Role
from coordinator.web.pages import PageError, database, page, read_form, require_viewer, see_other
from coordinator.web.sessions import Viewer

__all__ = ["CATALOGUE_PAGE_HANDLERS", "CATALOGUE_PATH", "EntryForm"]

CATALOGUE_PATH = "/console/operator/catalogue"
_HISTORY_ROWS = 20
_OPERATOR_AUTHOR = "operator:"


@dataclass(frozen=True, slots=True)
class EntryForm:
    """The add/edit form as a person typed it: every field a string, kept verbatim so a
    refused form comes back exactly as sent."""

    mode: str = "add"
    """``add`` (refused if the id exists) or ``edit`` (replaces the entry of the id)."""
    id: str = ""
    name: str = ""
    family: str = ""
    context_length: str = ""
    aliases: str = ""
    """One per line."""
    tokenizer: str = ""
    fingerprints: str = ""
    """One per line."""
    description: str = ""
    input_modalities: str = "text"
    """Comma-separated."""
    output_modalities: str = "text"

    @classmethod
    def of_entry(cls, entry: CatalogueEntry) -> EntryForm:
        return cls(
            mode="edit",
            id=entry.id,
            name=entry.name,
            family=entry.family,
            context_length=str(entry.context_length),
            aliases="\n".join(entry.aliases),
            tokenizer=entry.tokenizer or "",
            fingerprints="\n".join(entry.fingerprints),
            description=entry.description,
            input_modalities=", ".join(entry.modalities.input),
            output_modalities=", ".join(entry.modalities.output),
        )

    @classmethod
    def of_fields(cls, fields: Mapping[str, str]) -> EntryForm:
        names = [f for f in cls.__dataclass_fields__ if f != "mode"]
        values = {name: fields.get(name, "") for name in names}
        return cls(mode="edit" if fields.get("mode") == "edit" else "add", **values)

    def entry_data(self) -> dict[str, object]:
        """The entry the form describes, for :func:`coordinator.catalogue.checked_entry`."""
        return {
            "id": self.id.strip(),
            "name": self.name,
            "family": self.family.strip(),
            "context_length": self.context_length.strip(),
            "aliases": _lines(self.aliases),
            "tokenizer": self.tokenizer.strip() or None,
            "fingerprints": _lines(self.fingerprints),
            "description": self.description.strip(),
            "modalities": {
                "input": _words(self.input_modalities),
                "output": _words(self.output_modalities),
            },
        }


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _words(text: str) -> list[str]:
    return [word for word in text.replace(",", " ").split() if word]


def _form_field(entry_field: str) -> str:
    """The form input an :class:`InvalidEntry` field is typed in (``aliases.2`` -> ``aliases``)."""
    parts = entry_field.split(".")
    if parts[0] == "modalities":
        return f"{parts[1]}_modalities" if len(parts) > 1 else "input_modalities"
    return parts[0]


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a form was not applied, and where to show it."""

    status: int
    message: str
    form: str = ""
    """``entry``, ``alias`` or ``remove``: the form the message belongs next to."""
    field: str = ""
    """The entry form's input to mark, when one is at fault."""
    model: str = ""
    """The row of the alias form at fault."""
    typed: str = ""
    """What was typed in that alias form."""


@dataclass
class _View:
    """What the page shows besides the catalogue itself."""

    form: EntryForm = field(default_factory=EntryForm)
    form_open: bool = False
    refusal: Refusal | None = None
    status: int = 200


async def _render(request: Request[Any, Any, Any], viewer: Viewer, view: _View) -> Template:
    services = services_of(request)
    sessions = database(services)
    live = services.catalogue
    await live.refresh(sessions)  # changes made elsewhere show now, not after the refresh interval
    version, catalogue = live.version, live.current
    async with sessions() as session:
        history = await catalogue_history(session, _HISTORY_ROWS)
        operator_ids = {
            h.author.removeprefix(_OPERATOR_AUTHOR)
            for h in history
            if h.author.startswith(_OPERATOR_AUTHOR)
        }
        names = dict(
            (
                await session.execute(
                    select(Account.id, Account.name).where(Account.id.in_(operator_ids))
                )
            )
            .tuples()
            .all()
        )
    counts = services.registry.node_counts()
    rows = [
        {
            "entry": entry,
            "nodes": counts.get(entry.id, 0),
            "tokens": _token_counting(services, entry.id),
        }
        for entry in catalogue
    ]
    uncatalogued = [s for s in services.registry.summaries() if catalogue.get(s.model) is None]
    return page(
        request,
        "catalogue.html",
        viewer,
        {
            "version": version,
            "rows": rows,
            "uncatalogued": uncatalogued,
            "history": [
                {"revision": h, "who": _who(h.author, names), "latest": h.version == version}
                for h in history
            ],
            "form": view.form,
            "form_open": view.form_open,
            "refusal": view.refusal,
        },
        status_code=view.status,
        title="Model catalogue",
    )


def _token_counting(services: Services, model_id: str) -> dict[str, str]:
    status = services.tokenizers.status(model_id) if services.tokenizers is not None else "none"
    if status == "counted":
        return {"state": "counted", "why": "the coordinator counts this model's tokens"}
    if status.startswith("unavailable"):
        return {"state": "unavailable", "why": status.removeprefix("unavailable: ")}
    return {"state": "none", "why": "no tokenizer: billed from node reports, bounded"}


def _who(author: str, names: Mapping[str, str]) -> str:
    if author.startswith(_OPERATOR_AUTHOR):
        account_id = author.removeprefix(_OPERATOR_AUTHOR)
        name = names.get(account_id)
        return f"{name} ({account_id})" if name else account_id
    return {"starter": "the starter set", "admin-cli": "shareai admin catalogue"}.get(
        author, author
    )


@get(CATALOGUE_PATH)
async def catalogue_page(request: Request[Any, Any, Any]) -> Template:
    """The catalogue; ``?edit=ID`` opens the form on an entry, ``?add=NAME`` on a new one."""
    viewer = await require_viewer(request, Role.OPERATOR)
    live = services_of(request).catalogue
    await live.refresh(database(services_of(request)))
    view = _View()
    edit = request.query_params.get("edit", "")[:256]
    add = request.query_params.get("add", "")[:256]
    if edit:
        entry = live.current.get(edit)
        if entry is None:
            view.refusal = Refusal(
                404, f"no model {edit!r} in the catalogue (it may have been removed)"
            )
            view.status = 404
        else:
            view.form, view.form_open = EntryForm.of_entry(entry), True
    elif add:
        served = {s.model: s for s in services_of(request).registry.summaries()}
        context = str(served[add].context_length) if add in served else ""
        view.form = EntryForm(id=add, name=add, context_length=context)
        view.form_open = True
    return await _render(request, viewer, view)


async def _form(request: Request[Any, Any, Any]) -> tuple[Viewer, dict[str, str], int]:
    """The operator, the form's fields and the catalogue version the form was made on."""
    viewer = await require_viewer(request, Role.OPERATOR)
    fields = await read_form(request, viewer)
    raw = fields.pop("version", "").strip()
    if not (raw.isascii() and raw.isdigit()):
        raise PageError(
            400, "the form does not say which catalogue version it edits; reload the page"
        )
    return viewer, fields, int(raw)


async def _apply(
    request: Request[Any, Any, Any],
    viewer: Viewer,
    change: CatalogueChange,
    *,
    expected_version: int,
    note: str,
) -> int:
    """Store ``change`` made on ``expected_version``; the new version in force.

    Raises the catalogue's errors (the caller words them for its form).
    """
    services = services_of(request)
    version, _ = await store_change(
        database(services),
        services.catalogue,
        change,
        author=f"{_OPERATOR_AUTHOR}{viewer.account_id}",
        note=f"{note} (console)",
        expected_version=expected_version,
    )
    return version


def _refusal(error: CatalogueError, *, form: str, model: str = "", typed: str = "") -> Refusal:
    """How a refused change reads on the page: the status, and the message in plain words."""
    if isinstance(error, CatalogueStale):
        return Refusal(
            409,
            f"Nothing was saved: the catalogue changed while you were editing. This page showed"
            f" version {error.expected}; version {error.current} is in force now (see the"
            " history below). The page now shows the current catalogue and keeps what you"
            " typed: check it against the current entry, then submit again to apply it.",
            form=form,
            model=model,
            typed=typed,
        )
    if isinstance(error, InvalidEntry):
        return Refusal(
            400, str(error), form=form, field=_form_field(error.field), model=model, typed=typed
        )
    if isinstance(error, ModelNotInCatalogue):
        return Refusal(404, str(error), form=form, model=model, typed=typed)
    if isinstance(error, CatalogueBusy):
        return Refusal(503, str(error), form=form, model=model, typed=typed)
    return Refusal(409, str(error), form=form, model=model, typed=typed)


def _saved(version: int, before: int, done: str) -> Response[Any]:
    """Back to the page, saying what happened (a change that altered nothing stores nothing)."""
    if version == before:
        return see_other(CATALOGUE_PATH, notice="Nothing to change: the catalogue already says so.")
    return see_other(
        CATALOGUE_PATH, notice=f"Saved: {done}. Catalogue version {version} is in force."
    )


@post(CATALOGUE_PATH + "/entry", status_code=303)
async def save_entry(request: Request[Any, Any, Any]) -> Response[Any]:
    """Add a model (``mode=add``) or replace one (``mode=edit``) with the form's fields."""
    viewer, fields, version = await _form(request)
    form = EntryForm.of_fields(fields)
    model_id = form.id.strip()
    try:
        entry = checked_entry(form.entry_data(), where=model_id or "the new model")
        change = PutEntry(entry, replace=form.mode == "edit")
        stored = await _apply(
            request,
            viewer,
            change,
            expected_version=version,
            note=f"{form.mode} {entry.id}",
        )
    except CatalogueError as error:
        refusal = _refusal(error, form="entry")
        return await _render(request, viewer, _View(form, True, refusal, refusal.status))
    return _saved(stored, version, f"{entry.id} {'added' if form.mode == 'add' else 'updated'}")


@post(CATALOGUE_PATH + "/alias", status_code=303)
async def add_alias(request: Request[Any, Any, Any]) -> Response[Any]:
    """Add the spelling ``alias`` to the model ``model`` (its canonical id)."""
    viewer, fields, version = await _form(request)
    model, alias = fields.get("model", ""), fields.get("alias", "")
    if not alias.strip():
        refusal = Refusal(
            400, "type the alias to add: another spelling of this model", "alias", model=model
        )
        return await _render(request, viewer, _View(refusal=refusal, status=400))
    try:
        stored = await _apply(
            request,
            viewer,
            add_aliases(model, [alias.strip()]),
            expected_version=version,
            note=f"alias {model} + {alias.strip()}",
        )
    except CatalogueError as error:
        refusal = _refusal(error, form="alias", model=model, typed=alias)
        return await _render(request, viewer, _View(refusal=refusal, status=refusal.status))
    return _saved(stored, version, f"{model} answers to {alias.strip()!r}")


@post(CATALOGUE_PATH + "/unalias", status_code=303)
async def remove_alias(request: Request[Any, Any, Any]) -> Response[Any]:
    """Remove the spelling ``alias`` from the model ``model``."""
    viewer, fields, version = await _form(request)
    model, alias = fields.get("model", ""), fields.get("alias", "")
    try:
        stored = await _apply(
            request,
            viewer,
            remove_aliases(model, [alias]),
            expected_version=version,
            note=f"unalias {model} - {alias}",
        )
    except CatalogueError as error:
        refusal = _refusal(error, form="alias", model=model)
        return await _render(request, viewer, _View(refusal=refusal, status=refusal.status))
    return _saved(stored, version, f"{model} no longer answers to {alias!r}")


@post(CATALOGUE_PATH + "/remove", status_code=303)
async def remove_entry(request: Request[Any, Any, Any]) -> Response[Any]:
    """Remove the model ``model`` (its canonical id); its nodes' offers become uncatalogued."""
    viewer, fields, version = await _form(request)
    model = fields.get("model", "")
    try:
        stored = await _apply(
            request, viewer, remove_model(model), expected_version=version, note=f"remove {model}"
        )
    except CatalogueError as error:
        refusal = _refusal(error, form="remove", model=model)
        return await _render(request, viewer, _View(refusal=refusal, status=refusal.status))
    return _saved(stored, version, f"{model} removed; its nodes' offers are uncatalogued now")


CATALOGUE_PAGE_HANDLERS = [catalogue_page, save_entry, add_alias, remove_alias, remove_entry]
