// The Playground (coordinator/web/playground.py): a chat kept only in this page. Each message
// POSTs an OpenAI chat request to the console's chat endpoint (session cookie + x-csrf-token
// header), reads the SSE answer with fetch + ReadableStream, then fetches the generation record
// for the node, timings and itemised cost. No framework, no build step.
(function () {
  "use strict";
  var root = document.getElementById("playground");
  if (!root) { return; }
  var $ = function (id) { return document.getElementById(id); };
  var conversation = [];
  var busy = false;

  function usd(micro) {  // as coordinator.web.filters.usd: "$0.000123", at least 2 decimals
    var sign = micro < 0 ? "-$" : "$";
    micro = Math.abs(micro);
    var fraction = String(micro % 1000000).padStart(6, "0").replace(/0+$/, "");
    while (fraction.length < 2) { fraction += "0"; }
    return sign + Math.floor(micro / 1000000) + "." + fraction;
  }
  function perMillion(micro) {
    if (micro === null || micro === undefined || micro === "") { return "–"; }
    return usd(Number(micro)) + " / 1M";
  }
  function showPrice() {
    var option = $("pg-model").selectedOptions[0];
    if (!option) { return; }
    $("pg-price").textContent = "From " + perMillion(option.dataset.input) + " input, " +
      perMillion(option.dataset.output) + " output tokens";
  }
  function refreshPrices() {  // the public model list: prices change as nodes come and go
    if (document.hidden) { return; }
    fetch("/v1/models", { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (list) {
        if (!list) { return; }
        list.data.forEach(function (model) {
          Array.prototype.forEach.call($("pg-model").options, function (option) {
            if (option.value === model.id) {
              option.dataset.input = model.pricing.lowest.input;
              option.dataset.output = model.pricing.lowest.output;
            }
          });
        });
        showPrice();
      })
      .catch(function () { /* keep the prices shown */ });
  }
  function number(id) {
    var value = $(id).value.trim();
    return value === "" ? null : Number(value);
  }
  function requestBody() {
    var messages = [];
    var system = $("pg-system").value.trim();
    if (system) { messages.push({ role: "system", content: system }); }
    var body = {
      model: $("pg-model").value,
      messages: messages.concat(conversation),
      stream: true,
      stream_options: { include_usage: true }
    };
    if (number("pg-temperature") !== null) { body.temperature = number("pg-temperature"); }
    if (number("pg-max-tokens") !== null) { body.max_tokens = number("pg-max-tokens"); }
    var provider = {};
    if ($("pg-sort").value) { provider.sort = $("pg-sort").value; }
    var maxPrice = {};
    if (number("pg-max-prompt") !== null) { maxPrice.prompt = number("pg-max-prompt"); }
    if (number("pg-max-completion") !== null) { maxPrice.completion = number("pg-max-completion"); }
    if (Object.keys(maxPrice).length) { provider.max_price = maxPrice; }
    if (number("pg-min-reputation") !== null) { provider.min_reputation = number("pg-min-reputation"); }
    if (Object.keys(provider).length) { body.provider = provider; }
    return body;
  }
  function bubble(role, text) {
    var item = document.createElement("li");
    item.className = role;
    var who = document.createElement("strong");
    who.textContent = role === "user" ? "You" : "Assistant";
    var body = document.createElement("div");
    body.className = "text";
    body.textContent = text;
    item.appendChild(who);
    item.appendChild(body);
    $("pg-transcript").appendChild(item);
    return item;
  }
  function showError(message) {
    $("pg-error").textContent = message;
    $("pg-error").hidden = false;
  }
  function explain(response) {  // an error answer as a sentence a person can act on
    if (response.type === "opaqueredirect") {
      return Promise.resolve("Your session ended: reload the page to log in again.");
    }
    var prefix = {
      402: "Not enough credits: ",
      403: "Refused: ",
      404: "Not found: ",
      429: "Too many requests: ",
      503: "No node can take this request now: "
    }[response.status] || ("Error " + response.status + ": ");
    return response.text().then(function (text) {
      try {
        return prefix + JSON.parse(text).error.message;
      } catch (ignored) {
        var page = new DOMParser().parseFromString(text, "text/html").querySelector("main");
        return prefix + (page ? page.textContent.trim().replace(/\s+/g, " ") : response.statusText);
      }
    });
  }
  function readStream(response, onDelta) {  // resolves with the generation id
    var reader = response.body.getReader();
    var decoder = new TextDecoder();
    var buffer = "";
    var id = null;
    function handle(event) {
      event.split("\n").forEach(function (line) {
        if (line.indexOf("data: ") !== 0) { return; }
        var data = line.slice(6);
        if (data === "[DONE]") { return; }
        var chunk = JSON.parse(data);
        if (chunk.error) { throw new Error(chunk.error.message || "the answer failed"); }
        id = chunk.id || id;
        (chunk.choices || []).forEach(function (choice) {
          if (choice.delta && choice.delta.content) { onDelta(choice.delta.content); }
        });
      });
    }
    function pump() {
      return reader.read().then(function (step) {
        if (step.done) { return id; }
        buffer += decoder.decode(step.value, { stream: true });
        var events = buffer.split("\n\n");
        buffer = events.pop();
        events.forEach(handle);
        return pump();
      });
    }
    return pump();
  }
  function settledGeneration(id, tries) {  // the record once its charge is posted to the ledger
    return fetch(root.dataset.generations + encodeURIComponent(id), {
      credentials: "same-origin", redirect: "manual"
    }).then(function (response) {
      if (!response.ok) { return null; }
      return response.json().then(function (generation) {
        if (generation.settled || tries <= 0) { return generation; }
        return new Promise(function (resolve) { setTimeout(resolve, 250); })
          .then(function () { return settledGeneration(id, tries - 1); });
      });
    });
  }
  function fact(parent, label, text, attributes) {
    var span = document.createElement("span");
    span.textContent = label + " " + text;
    Object.keys(attributes || {}).forEach(function (name) { span.setAttribute(name, attributes[name]); });
    parent.appendChild(span);
  }
  function showFacts(item, generation) {
    var facts = document.createElement("div");
    facts.className = "facts";
    var ttft = generation.timings_ms.time_to_first_token;
    var total = generation.timings_ms.total;
    var tokens = generation.usage.completion_tokens;
    var generating = total !== null && ttft !== null ? (total - ttft) / 1000 : null;
    var rate = generating && generating > 0 ? (tokens / generating).toFixed(1) + " tokens/s" : "–";
    fact(facts, "node", generation.node, { "data-node": generation.node });
    fact(facts, "first token", ttft === null ? "–" : ttft + " ms", { "data-ttft-ms": String(ttft) });
    fact(facts, "speed", rate, { "data-tokens-per-s": "" });
    fact(facts, "tokens", generation.usage.prompt_tokens + " / " + tokens, { "data-tokens": "" });
    var cost = generation.cost;
    [["provider", "provider_micro_usd"], ["builder surcharge", "builder_surcharge_micro_usd"],
      ["platform fee", "platform_fee_micro_usd"], ["total", "total_micro_usd"]].forEach(function (part) {
      fact(facts, part[0], usd(cost[part[1]]), {
        "data-part": part[0].split(" ")[0], "data-micro-usd": String(cost[part[1]])
      });
    });
    if (!generation.settled) { fact(facts, "", "(charge not yet posted)", {}); }
    item.appendChild(facts);
    item.dataset.generation = generation.id;
  }
  function send(event) {
    event.preventDefault();
    var text = $("pg-message").value.trim();
    if (!text || busy) { return; }
    busy = true;
    $("pg-send").disabled = true;
    $("pg-error").hidden = true;
    conversation.push({ role: "user", content: text });
    bubble("user", text);
    $("pg-message").value = "";
    var item = bubble("assistant", "");
    item.dataset.state = "streaming";
    var answer = "";
    fetch(root.dataset.chat, {
      method: "POST",
      credentials: "same-origin",
      redirect: "manual",
      headers: { "content-type": "application/json", "x-csrf-token": root.dataset.csrf },
      body: JSON.stringify(requestBody())
    }).then(function (response) {
      if (!response.ok) {
        return explain(response).then(function (message) { throw new Error(message); });
      }
      return readStream(response, function (delta) {
        answer += delta;
        item.querySelector(".text").textContent = answer;
      });
    }).then(function (id) {
      conversation.push({ role: "assistant", content: answer });
      item.dataset.state = "done";
      return id ? settledGeneration(id, 40) : null;
    }).then(function (generation) {
      if (generation) { showFacts(item, generation); }
    }).catch(function (error) {
      conversation.pop();  // the question was not answered: not part of the conversation
      item.remove();
      showError(error.message);
    }).then(function () {
      busy = false;
      $("pg-send").disabled = false;
    });
  }
  $("pg-model").addEventListener("change", showPrice);
  $("pg-form").addEventListener("submit", send);
  $("pg-clear").addEventListener("click", function () {
    conversation = [];
    $("pg-transcript").innerHTML = "";
    $("pg-error").hidden = true;
  });
  showPrice();
  window.setInterval(refreshPrices, 15000);
})();
