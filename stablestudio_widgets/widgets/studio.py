"""The whole flow in one widget: pick a model, fill the form, see the exact price, generate,
watch the cards. The kernel side signs and polls; the front end never sees a key or media bytes.
"""

from __future__ import annotations

import uuid
from typing import Any

import traitlets

from ..errors import ConfirmationRequired, InvalidParams, fmt_usd
from ..jobs import AsyncJob
from ..results import jpeg_data_uri
from ..x402 import NETWORK_NAMES
from ._runtime import Bridge, css, esm, report
from .feed import FeedWidget, Handler, JobFeed, consented_usd

QUOTE_DEBOUNCE_S = 0.3
THUMB_PX = 96
INSPECTED_JOBS = 3  # the newest cards keep their payment inspector; older ones drop it from state
PLACEHOLDER = "https://upload.invalid/placeholder.png"  # stands in for an image when only quoting
SANDBOX_BANNER = ("Sandbox: payments are really signed and verified, but by a local server on Base Sepolia test "
                  "terms with a throwaway wallet — no real money moves. To use the real service, set "
                  "STABLESTUDIO_PRIVATE_KEY (or STABLESTUDIO_KEYSTORE) and use StableStudio() or Studio().")


class Studio(FeedWidget):
    """Model picker, parameter form from the route table, live price, generate, live gallery."""

    _esm = esm("studio")
    _css = css("studio")
    catalog = traitlets.Dict().tag(sync=True)
    model = traitlets.Unicode("nano-banana").tag(sync=True)
    mode = traitlets.Unicode("generate").tag(sync=True)
    route_id = traitlets.Unicode("nano-banana/generate").tag(sync=True)
    prompt = traitlets.Unicode("").tag(sync=True)
    params = traitlets.Dict().tag(sync=True)
    inputs = traitlets.List(traitlets.Dict()).tag(sync=True)
    # A quote names the form it priced (``for``: route, params, attached images): the front end
    # treats it as the price of the form on screen only while the two are the same.
    quote = traitlets.Dict({"status": "idle", "amount_usd": None, "route_id": "", "message": "",
                            "for": None}).tag(sync=True)
    inputs_note = traitlets.Unicode("").tag(sync=True)  # why attached images were taken off the form
    budget = traitlets.Dict().tag(sync=True)
    sandbox = traitlets.Bool(False).tag(sync=True)
    banner = traitlets.Unicode("").tag(sync=True)
    wallet_address = traitlets.Unicode("").tag(sync=True)
    network_name = traitlets.Unicode("").tag(sync=True)
    pending_confirmation = traitlets.Dict(allow_none=True, default_value=None).tag(sync=True)
    jobs = traitlets.List(traitlets.Dict()).tag(sync=True)
    _record_lists = ("jobs",)
    total_spent_usd = traitlets.Float(0.0).tag(sync=True)

    def __init__(self, client: Any = None, *, model: str = "nano-banana", **kwargs: Any):
        self._bridge = Bridge.for_client(client)
        aio = self._bridge.aio
        route = aio.catalog.generate_route(model)
        self._uploads: dict[str, bytes] = {}  # attached images stay in the kernel, never in widget state
        self._awaiting: dict[str, tuple[AsyncJob, dict[str, Any]]] = {}  # by confirmation id
        self._quote_handle: Any = None
        super().__init__(catalog=aio.catalog.data, model=model, route_id=route.id, **kwargs)
        self._feed = JobFeed(self, self._bridge, inspector=INSPECTED_JOBS, follow_all=True)
        self._feed.on_flush.append(self._refresh_money)
        self.sandbox = aio.is_sandbox
        self.banner = SANDBOX_BANNER if aio.is_sandbox else ""
        self.wallet_address = aio.wallet.address
        self.network_name = self._network_label(aio.chain_ids[0])
        self._refresh_money()
        self.on_msg(self._on_msg)
        self._unsubscribe_catalog = aio.catalog.subscribe(self._follow_catalog)
        self._schedule_quote()

    def _static_notes(self) -> list[str]:
        session = f"This session: {fmt_usd(self.total_spent_usd)} spent · wallet {self.wallet_address}"
        return [f"{session} · {self.network_name}", *self._older_note()]

    def _follow_catalog(self, catalog: Any, added: list[str], removed: list[str]) -> None:
        """A refreshed route table (``refresh_routes()``): the picker shows it at once, and a model
        that is gone gives way to the recommended one (the front end does the same when open)."""
        with self.hold_sync():
            self.catalog = catalog.data
            if self.route_id not in catalog.routes:
                recommended = catalog.data.get("service", {}).get("recommended", {}).get("image")
                model = self.model if self.model in catalog.models else (
                    recommended if recommended in catalog.models else catalog.models[0])
                self.model, self.mode, self.route_id = model, "generate", catalog.generate_route(model).id

    def close(self) -> None:
        if hasattr(self, "_unsubscribe_catalog"):
            self._unsubscribe_catalog()
        super().close()

    # --- money ----------------------------------------------------------------------------------
    def _refresh_money(self) -> None:
        aio = self._bridge.aio
        p, spent = aio.policy, aio.spending.spent / 1e6
        self.budget = {"spent_usd": spent, "budget_usd": p.budget_usd, "remaining_usd": aio.spending.remaining_usd,
                       "max_per_request_usd": p.max_usd_per_request, "confirm_above_usd": p.confirm_above_usd}
        self.total_spent_usd = round(spent, 6)

    def _network_label(self, network: str) -> str:
        return NETWORK_NAMES.get(network, network) + (" (sandbox)" if self._bridge.aio.is_sandbox else "")

    # --- quotes ---------------------------------------------------------------------------------
    @traitlets.observe("route_id", "params", "inputs")
    def _form_changed(self, _change: dict[str, Any]) -> None:
        self._schedule_quote()

    def _schedule_quote(self) -> None:
        def arm() -> None:
            if self._quote_handle is not None:
                self._quote_handle.cancel()
            self._quote_handle = self._bridge.loop.call_later(QUOTE_DEBOUNCE_S,
                                                              lambda: self._bridge.spawn(self._requote()))
        self._bridge.call_soon(arm)

    def _form(self) -> dict[str, Any]:
        """What a price depends on, as the front end sees it: the route, the parameters, the images."""
        return {"route_id": self.route_id, "params": dict(self.params),
                "inputs": [i.get("name") for i in self.inputs]}

    async def _requote(self) -> None:
        form = self._form()
        route_id = form["route_id"]
        self.quote = {"status": "loading", "amount_usd": None, "route_id": route_id, "message": "", "for": form}
        try:
            params = self._call_params(for_quote=True)
            q = await self._bridge.aio.quote(route_id, **params)
        except Exception as e:  # no request waits for a quote: its failure shows where the price would
            message = report(e, "A quote")
            if form == self._form():
                self.quote = {"status": "error", "amount_usd": None, "route_id": route_id, "message": message,
                              "for": form}
            return
        if form == self._form():  # else the form changed meanwhile: its own quote is on the way
            uploads = f" incl. {q.uploads} upload(s)" if q.uploads else ""
            self.quote = {"status": "ok", "amount_usd": q.total_usd, "route_id": route_id, "for": form,
                          "message": f"{fmt_usd(q.total_usd)}{uploads} on {self._network_label(q.network)}"}
            self.network_name = self._network_label(q.network)  # the network this wallet will pay on

    def _call_params(self, *, for_quote: bool = False) -> dict[str, Any]:
        route = self._bridge.aio.catalog.route(self.route_id)
        params = {k: v for k, v in self.params.items()
                  if k in route.params and not route.params[k].is_media and v not in ("", None)}
        params["prompt"] = self.prompt if self.prompt.strip() or not for_quote else "price check"
        # Images are sent only in a mode that uses them (Veo and Grok Video share one route for text
        # and image to video); a switch of model or mode takes them off the form (_route_changed).
        inputs = [i for i in self.inputs if i.get("name") in self._uploads] if self.mode != "generate" else []
        for name, chosen in _assign(route, inputs).items():
            data = [self._uploads[i["name"]] for i in chosen]
            if not data and for_quote and route.params[name].required:
                data = [PLACEHOLDER]
            if data:
                params[name] = data if route.params[name].type == "url_list" else data[0]
        return params

    # --- requests from the front end (answered on the client's loop by FeedWidget._answer) ------
    def _handlers(self) -> dict[str, Handler]:
        return {**super()._handlers(), "generate": self._generate, "confirm": self._confirm,
                "upload": self._attach, "remove_input": self._detach}

    def _attach(self, content: dict[str, Any], buffers: list) -> None:
        if not buffers:
            raise InvalidParams("No file data arrived with the upload: pick the image again.", field="upload")
        data = bytes(buffers[0])
        name = str(content.get("name") or f"image-{len(self._uploads) + 1}.png")
        while name in self._uploads:
            name = "copy-" + name
        self._uploads[name] = data
        self.inputs_note = ""
        media = {n for r in self._bridge.aio.catalog.routes.values() for n, p in r.params.items() if p.is_media}
        slot = content.get("param") if content.get("param") in media else "image"
        self.inputs = [*self.inputs, {"name": name, "size": len(data), "status": "local", "url": None,
                                      "param": slot, "thumb": jpeg_data_uri(data, THUMB_PX, 70)}]

    def _detach(self, content: dict[str, Any], _buffers: list) -> None:
        index = content.get("index")
        if not isinstance(index, int) or not 0 <= index < len(self.inputs):
            raise InvalidParams(f"No attached image at position {index!r}: the list changed.", field="index")
        gone = self.inputs[index]
        self._uploads.pop(gone.get("name"), None)
        self.inputs = [x for i, x in enumerate(self.inputs) if i != index]

    def _generate(self, content: dict[str, Any], _buffers: list) -> None:
        """Pays at most the price on screen: the request carries the quote the user saw, and it must be
        the quote of the form as it is now. That price is the payment's ceiling when it needs no
        confirmation (a higher 402 is asked in the confirmation panel instead of paid). Answered once
        the job's card exists (or with why there is none); paying and polling go on."""
        aio = self._bridge.aio
        params = self._call_params()
        route = aio.catalog.route(self.route_id)
        wire = route.validate(params, uploadable=True)  # bad input is refused first, with its field
        shown = content.get("quote") if isinstance(content.get("quote"), dict) else {}
        form, q = self._form(), self.quote
        if q.get("status") != "ok" or q.get("for") != form or shown.get("for") != form \
                or shown.get("amount_usd") != q.get("amount_usd"):
            now = f" (now {fmt_usd(q['amount_usd'])})" if q.get("status") == "ok" and q.get("for") == form else ""
            raise InvalidParams(f"The price on screen is not the price of these settings{now}: check it and press "
                                "Generate again. Nothing was signed.", field="quote")
        job = aio.tracker.new_job(route.id, wire)  # one set of parameters: the job's are the ones paid for
        self._feed.track(job)
        shown, threshold = float(q["amount_usd"]), aio.policy.confirm_above_usd
        ceiling = shown if threshold is None or shown <= threshold else None
        self._pay(content.get("request_id") or uuid.uuid4().hex, job, ceiling)

    def _pay(self, confirmation_id: str, job: AsyncJob, confirm_usd: float | None = None) -> None:
        """Pay for ``job`` in the background; however that ends, its card says so (``JobFeed.guard``)."""
        self._bridge.spawn(self._feed.guard(self._pay_and_wait(confirmation_id, job, confirm_usd), job))

    async def _pay_and_wait(self, confirmation_id: str, job: AsyncJob, confirm_usd: float | None = None) -> None:
        """The one place the Studio pays: for ``job`` (its validated wire parameters) within
        ``confirm_usd`` (the price Generate or the Pay button showed); a price the user has not
        agreed to (or a new payee) is asked again, never signed."""
        try:
            await self._bridge.aio.submit(job.route.id, dict(job.params), confirm_usd=confirm_usd, job=job)
        except ConfirmationRequired as e:
            job.awaiting_confirmation(e.price_usd)
            self._awaiting[confirmation_id] = (job, {
                "id": confirmation_id, "price_usd": e.price_usd, "route_id": job.route.id,
                "label": job.route.label, "message": _question(e, job)})
            self._ask_next()
            return
        self._refresh_money()
        await job.wait()

    def _ask_next(self) -> None:
        """Show the oldest payment waiting for the user's OK (a second Generate may be waiting too)."""
        self.pending_confirmation = next((panel for _, panel in self._awaiting.values()), None)

    def _confirm(self, content: dict[str, Any], _buffers: list) -> None:
        """The Pay (or Decline) button: consent to the price the panel showed, never more."""
        confirmation_id = str(content.get("confirmation_id"))
        pending = self._awaiting.pop(confirmation_id, None)
        if pending is None:
            raise InvalidParams("No payment is waiting for this confirmation: it was answered already.",
                                field="confirmation_id")
        job, panel = pending
        self._ask_next()
        if content.get("accept") is True:
            sent = consented_usd(content.get("amount_usd"))
            consent = panel["price_usd"] if sent is None else min(sent, panel["price_usd"])
            # A higher price than the panel showed comes back as a new question (a new confirmation id).
            self._pay(uuid.uuid4().hex, job, consent)
        else:
            job.cancel()

    @traitlets.observe("route_id", "mode")
    def _route_changed(self, change: dict[str, Any]) -> None:
        """Attached images belong to the model and mode they were attached for: a switch takes them
        off the form, and says so (they are never sent somewhere the user did not attach them)."""
        if not self.inputs or change["old"] == change["new"]:
            return
        n = len(self.inputs)
        self._uploads.clear()
        self.inputs = []
        them = "them" if n > 1 else "it"
        self.inputs_note = (f"{n} attached image{'s were' if n > 1 else ' was'} removed when you switched from "
                            f"{change['old']}: attach {them} again to use {them} here.")


def _question(e: ConfirmationRequired, job: AsyncJob) -> str:
    """The confirmation panel's question, as a person would ask it (no API words)."""
    what = f"{job.route.label}, {job.route.media}"
    if e.consented_usd is not None and e.price_usd > e.consented_usd:
        return f"This now costs {fmt_usd(e.price_usd)}, more than the {fmt_usd(e.consented_usd)} you agreed to: {what}."
    if e.threshold_usd is not None:
        threshold = fmt_usd(e.threshold_usd)
        return f"This costs {fmt_usd(e.price_usd)}: {what}. It is above the {threshold} you asked to confirm."
    return f"This costs {fmt_usd(e.price_usd)}: {what}. The payee changed since the price was shown."


def _assign(route: Any, inputs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Which attached images feed which image parameter, as the front end shows them
    (js/components/catalog.js assignInputs): by name, then empty single slots, then the list."""
    media = [p for p in route.params.values() if p.is_media]
    out: dict[str, list[dict[str, Any]]] = {p.name: [] for p in media}
    rest = [i for i in inputs if i.get("param") not in out]
    for i in inputs:
        if i.get("param") in out:
            out[i["param"]].append(i)
    for p in media:
        if rest and p.type != "url_list" and not out[p.name]:
            out[p.name].append(rest.pop(0))
    target = next((p.name for p in media if p.type == "url_list"), media[0].name if media else None)
    if rest and target:
        out[target].extend(rest)
    return out
