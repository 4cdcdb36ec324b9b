"""The public marketplace pages (no login): ``/models``, ``/models/{model}``, ``/providers``.

They show what :mod:`coordinator.api.market` answers as JSON (``/v1/market/models``,
``/v1/market/models/{model}``, ``/v1/providers``). Sorting and filtering are plain query
parameters (``/models?sort=price&q=llama``), so they work without JavaScript; a parameter that
cannot be used is a 400 page saying which. A model page carries copy-paste snippets for the
``openai`` SDK and curl, built here with the model id quoted for Python and for the shell
(Jinja then escapes them for HTML).
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode

from litestar import Request, Response, get
from litestar.types import ControllerRouterHandler
from markupsafe import Markup

from coordinator.api.context import services_of
from coordinator.api.market import (
    WINDOWS,
    UnknownModel,
    model_detail,
    models_listing,
    providers_listing,
)
from coordinator.market.views import HIGH_REPUTATION, SORTS, InvalidQuery, parse_model_query
from coordinator.web.charts import Series, line_chart
from coordinator.web.filters import NONE
from coordinator.web.pages import PageError, page, viewer_or_none

__all__ = ["MARKET_PAGE_HANDLERS", "curl_snippet", "python_snippet"]

_SORT_LABELS = {
    "name": "Name",
    "price": "Lowest price",
    "speed": "Fastest (tokens/s)",
    "latency": "Lowest time to first token",
    "availability": "Most available",
    "nodes": "Most nodes",
}


def _share(ratio: float | None) -> str:
    return NONE if ratio is None else f"{ratio * 100:.1f} %".replace(".0 %", " %")


def _ms(value: float | None) -> str:
    return NONE if value is None else f"{value:,.0f} ms"


def _rate(value: float | None) -> str:
    return NONE if value is None else f"{value:,.1f}"


def _score(value: float | None) -> str:
    return NONE if value is None else f"{value:.2f}"


_HELPERS = {"share": _share, "ms": _ms, "rate": _rate, "score": _score, "dash": NONE}


def python_snippet(base_url: str, model: str) -> str:
    """A runnable ``openai`` SDK example; the key comes from ``SHAREAI_API_KEY``."""
    return (
        "import os\n"
        "from openai import OpenAI\n\n"
        f'client = OpenAI(base_url={json.dumps(base_url)}, api_key=os.environ["SHAREAI_API_KEY"])\n'
        "answer = client.chat.completions.create(\n"
        f"    model={json.dumps(model)},\n"
        '    messages=[{"role": "user", "content": "Say hello"}],\n'
        ")\n"
        "print(answer.choices[0].message.content)\n"
    )


def curl_snippet(base_url: str, model: str) -> str:
    """The same request with curl; the model id is quoted for the shell inside the JSON body."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Say hello"}]})
    return (
        f"curl {shlex.quote(base_url + '/chat/completions')} \\\n"
        '  -H "Authorization: Bearer $SHAREAI_API_KEY" \\\n'
        '  -H "Content-Type: application/json" \\\n'
        f"  -d {shlex.quote(body)}\n"
    )


def _clock(epoch_s: float) -> str:
    return time.strftime("%H:%M", time.gmtime(epoch_s))


def _usd(micro_usd: float | None) -> float | None:
    return None if micro_usd is None else micro_usd / 1_000_000


def history_charts(points: Sequence[Mapping[str, Any]]) -> list[Markup]:
    """Price paid and time to first token over the window (gaps: minutes without requests)."""
    if not points:
        return []
    starts = [float(p["start_s"]) for p in points]
    labels = [_clock(starts[0]), _clock(starts[len(starts) // 2]), _clock(starts[-1]) + " UTC"]
    return [
        line_chart(
            "Price paid per 1M tokens (mean)",
            [
                Series("input", [_usd(p["price_paid_mean"]["input"]) for p in points]),
                Series("output", [_usd(p["price_paid_mean"]["output"]) for p in points]),
            ],
            x_labels=labels,
            unit="USD",
        ),
        line_chart(
            "Time to first token (mean)",
            [Series("time to first token", [p["ttft_ms_mean"] for p in points])],
            x_labels=labels,
            unit="ms",
        ),
    ]


def _base_url(request: Request[Any, Any, Any]) -> str:
    return str(request.base_url).rstrip("/") + "/v1"


@get("/models")
async def models_page(request: Request[Any, Any, Any]) -> Response[Any]:
    viewer = await viewer_or_none(request)
    try:
        query = parse_model_query(request.query_params)
    except InvalidQuery as error:
        raise PageError(400, f"That models search cannot be used: {error}") from None
    listing = models_listing(services_of(request), query)

    def sort_link(sort: str) -> str:
        params = query.params() | {"sort": sort}
        return "/models?" + urlencode(params)

    context = {
        "listing": listing,
        "query": query,
        "form": query.params(),
        "sorts": [(sort, _SORT_LABELS[sort]) for sort in SORTS],
        "sort_link": sort_link,
        "model_link": lambda model: "/models/" + quote(model, safe="/:@"),
        "high_reputation": HIGH_REPUTATION,
        **_HELPERS,
    }
    return page(request, "models.html", viewer, context, title="Models")


@get("/models/{model:path}")
async def model_page(request: Request[Any, Any, Any]) -> Response[Any]:
    viewer = await viewer_or_none(request)
    window = request.query_params.get("window", "1h")
    if window not in WINDOWS:
        raise PageError(400, "window must be 1h or 24h")
    model = str(request.path_params["model"]).strip("/")
    try:
        detail = model_detail(services_of(request), model, window)
    except UnknownModel:
        raise PageError(404, f"No node serves the model {model!r} right now.") from None
    model_id = detail["model"]["id"]
    base_url = _base_url(request)
    context = {
        "detail": detail,
        "row": detail["model"],
        "window": window,
        "windows": list(WINDOWS),
        "charts": history_charts(detail["history"]["points"]),
        "python_snippet": python_snippet(base_url, model_id),
        "curl_snippet": curl_snippet(base_url, model_id),
        "json_path": "/v1/market/models/" + quote(model_id, safe="/:@"),
        "self_path": "/models/" + quote(model_id, safe="/:@"),
        **_HELPERS,
    }
    return page(request, "model.html", viewer, context, title=model_id)


@get("/providers")
async def providers_page(request: Request[Any, Any, Any]) -> Response[Any]:
    viewer = await viewer_or_none(request)
    listing = await providers_listing(services_of(request))
    context = {"listing": listing, **_HELPERS}
    return page(request, "providers.html", viewer, context, title="Providers")


MARKET_PAGE_HANDLERS: list[ControllerRouterHandler] = [models_page, model_page, providers_page]
