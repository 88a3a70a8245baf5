"""The Deployment view as one `Handler`: routes, who may see what, and where message-level answers come from.

Every instance serves the whole view: the delivery list and KPIs from its own KPI view, the actions by
publishing to Kafka, and message-level answers (sending logs) from the partition's owner, here or
forwarded there. A delivery's page is always made here; only its sending logs are asked of the owner.
"""

from __future__ import annotations

import csv
import io
import json
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from consumer.codec.control import COMPUTE_STATS
from consumer.kafka.topics import Topics
from consumer.ops import logging as logs
from consumer.ops.exchange import Request, Response, count
from consumer.quarantine.privacy import address_ref
from consumer.web import pages, routes
from consumer.web.actions import CONFIRM, MESSAGES, RELEASE_ACTION, Actions, Outcome, Publisher
from consumer.web.addresses import (
    STATUS_PATH,
    AddressPlacement,
    AddressProblem,
    address_of,
    ask_owner,
    history_rows,
    releasable,
)
from consumer.web.auth import Auth, Identity
from consumer.web.csrf import JSON, Csrf, media_type, same_origin
from consumer.web.headers import secured
from consumer.web.owner_state import STATUSES, OwnerState
from consumer.web.owners import (
    ADDRESS_PARTITIONS,
    DELIVERY_PARTITIONS,
    INSTANCE_PATH,
    OwnerAnswerError,
    OwnerClient,
    Owners,
    OwnerUnreachable,
    forward,
    is_routed,
    redirect,
)
from consumer.web.routes import Route
from consumer.web.signin import THROTTLED, SignIn, client_address
from consumer.web.table import KpiEntry, KpiTable
from consumer.web.throttle import Throttle

PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
EXPORT_PAGE = 1000  # messages per read of an export: what it holds in memory at once
ALL = "ALL"
FAILED = "FAILED"
MAX_SEARCH = 256  # characters of a search: no delivery id is longer
HTML = "text/html; charset=utf-8"
ACTIONS = f"{CONFIRM}|{COMPUTE_STATS}"


class WebApp:
    def __init__(
        self,
        kpis: KpiTable,
        owners: Owners | None,
        auth: Auth,
        publisher: Publisher,
        owner_state: OwnerState | None,
        registry: CollectorRegistry,
        *,
        topics: Topics,
        advertised_url: str = "",
        forward_timeout_s: float = 5.0,
        forward_context: ssl.SSLContext | None = None,
        stream_s: float = 300.0,
        heartbeat_s: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
        throttle: Throttle | None = None,
        addresses: AddressPlacement | None = None,
    ) -> None:
        """`addresses`: where the quarantine's address records live; None (no quarantine) has no address pages."""
        self.kpis = kpis
        self.auth = auth
        self.actions = Actions(publisher, auth, registry, topics)
        self._owners = owners
        self._owner_state = owner_state
        self._addresses = addresses
        self._csrf = Csrf(auth.secret)
        self._throttle = throttle or Throttle()
        self._sign_in = SignIn(auth, self._throttle, registry)
        self._advertised_url = advertised_url
        self._forward_timeout_s = forward_timeout_s
        self._forward_context = forward_context
        self._stream_s = stream_s  # an event stream ends after this; the browser reconnects where it left off
        self._heartbeat_s = heartbeat_s
        self._clock = clock
        self._log = logs.get("sendtrack.web")
        self._routes = [
            Route.of("GET", "/", self._list_page),
            Route.of("GET", "/events", self._events),
            Route.of("GET", "/api/deliveries", self._api_list),
            Route.of("GET", "/api/deliveries/{delivery_id}/failed", self._api_failed),
            Route.of("GET", "/api/deliveries/{delivery_id}/messages", self._api_message),
            Route.of("POST", f"/api/deliveries/{{delivery_id}}/{{action={ACTIONS}}}", self._api_action),
            Route.of("POST", f"/deliveries/{{delivery_id}}/{{action={ACTIONS}}}", self._form_action),
            Route.of("GET", "/deliveries/{delivery_id}", self._delivery),
            Route.of("GET", "/deliveries/{delivery_id}/sending-logs.csv", self._export),
            # Addresses travel in POST bodies only: never in a path or query that proxies and access logs keep.
            Route.of("GET", "/addresses", self._address_search),
            Route.of("POST", "/addresses", self._address_page),
            Route.of("POST", "/addresses/release", self._form_release),
            Route.of("POST", STATUS_PATH, self._api_address),
            Route.of("POST", "/api/addresses/release", self._api_release),
        ]

    def handle(self, request: Request) -> Response | None:
        """Every answer, here or from an owner, leaves with our security headers."""
        response = self._handle(request)
        return None if response is None else secured(response, request.secure)

    def _handle(self, request: Request) -> Response | None:
        if request.path.startswith("/static/"):
            return self._static(request.path[len("/static/") :])
        if request.path == INSTANCE_PATH:  # public: peers ask it to find owners (a URL and partition numbers)
            owned = {DELIVERY_PARTITIONS: self._owned(), ADDRESS_PARTITIONS: self._addresses_owned()}
            return _json(200, {"url": self._advertised_url} | {name: sorted(p) for name, p in owned.items()})
        found = self._route(request)
        if found is None or isinstance(found, Response):
            return found
        answer, params = found
        identity = self._sign_in.identify(request)
        if identity == THROTTLED:
            return self._error(request, None, 429, "Too many failed sign-ins; wait a minute.", self._retry_after())
        assert not isinstance(identity, str)
        try:
            if request.method == "POST":  # actions decide and audit their refusals themselves
                return answer(request, identity, **params)
            return self._read_refusal(request, identity) or answer(request, identity, **params)
        except BadRequest as exc:
            return self._error(request, identity, 400, str(exc))

    def metrics_refusal(self, request: Request) -> Response | None:
        """/metrics is open unless the web config protects it; then it is read like the view (the server asks)."""
        if self.auth.config is None or not self.auth.config.protect_metrics:
            return None
        identity = self._sign_in.identify(request)
        if identity == THROTTLED:
            return secured(_json(429, {"error": "too many failed sign-ins"}, self._retry_after()), request.secure)
        assert not isinstance(identity, str)
        refusal = self._read_refusal(request, identity)
        return None if refusal is None else secured(refusal, request.secure)

    def _retry_after(self) -> list[tuple[str, str]]:
        return [("Retry-After", self._throttle.retry_after())]

    def _route(self, request: Request) -> tuple[Callable[..., Response | None], dict[str, str]] | Response | None:
        """The answer and its path parameters; a 405 for a known path and another method; None if not ours."""
        found = routes.find(self._routes, request)
        if isinstance(found, set):
            return _json(405, {"error": f"{request.method} not allowed"}, [("Allow", ", ".join(sorted(found)))])
        if found is None:
            return None
        route, params = found
        return route.answer, params  # type: ignore[return-value]

    # -- reading -----------------------------------------------------------------------------------------
    def _read_refusal(self, request: Request, identity: Identity | None) -> Response | None:
        if identity is None:
            return self._error(request, identity, 401, "Sign in to see the deliveries.", self.auth.challenges())
        if not self.auth.can_read(identity):
            return self._error(request, identity, 403, "Your user has no role in sendtrack.")
        return None

    def _list_page(self, request: Request, identity: Identity) -> Response:
        query = _list_query(request)
        cursor = self.kpis.cursor()  # before the page: live updates may repeat a change, never miss one
        page = self.kpis.page(PAGE_SIZE, query.before, query.state, query.search)
        total, by_state = self.kpis.counts()
        body = pages.render(
            "index.html",
            identity=identity,
            page=page,
            query=query,
            cursor=cursor,
            states=pages.STATES,
            total=total,
            by_state=by_state,
            can_view_addresses=self._addresses is not None and self.auth.can_view_addresses(identity),
        )
        return _html(200, body)

    def _api_list(self, request: Request, identity: Identity) -> Response:
        """A page of deliveries, newest change first; `next_cursor` asks for the next one."""
        query = _list_query(request, "cursor")
        limit = min(_int_param(request, "limit", PAGE_SIZE), MAX_PAGE_SIZE)
        cursor = self.kpis.cursor()
        page = self.kpis.page(limit, query.before, query.state, query.search)
        return _json(
            200,
            {
                "cursor": cursor,  # for /events: the changes after this page was read
                "deliveries": [e.kpi for e in page.entries],
                "next_cursor": None if page.next_before is None else str(page.next_before),
            },
        )

    def _events(self, request: Request, identity: Identity) -> Response:
        """Changed KPIs after a cursor: a server-sent event stream, or one JSON answer for pollers. `delivery`
        follows one delivery, `q` the deliveries whose id contains it (the list's search)."""
        cursor = _cursor_param(request)
        wanted = _Wanted(_param(request, "delivery"), _param(request, "q") or "")
        if "text/event-stream" in request.headers.get("accept", ""):
            headers = [("Cache-Control", "no-cache"), ("X-Accel-Buffering", "no")]
            return Response(200, self._stream(cursor, wanted), "text/event-stream", headers)
        cursor, entries = self.kpis.changes(cursor, 0)
        return _json(200, {"cursor": cursor, "changes": [self._live(e, wanted) for e in entries if wanted.takes(e)]})

    def _stream(self, cursor: str | None, wanted: _Wanted) -> Iterator[bytes]:
        yield b"retry: 2000\n\n"
        deadline = self._clock() + self._stream_s
        while self._clock() < deadline:
            cursor, entries = self.kpis.changes(cursor, self._heartbeat_s)
            events = [
                f"id: {cursor}\nevent: kpi\ndata: {json.dumps(self._live(e, wanted))}\n\n".encode()
                for e in entries
                if wanted.takes(e)
            ]
            yield b"".join(events) or b": keep-alive\n\n"

    def _live(self, entry: KpiEntry, wanted: _Wanted) -> dict[str, Any]:
        """A change as the browser applies it; a delivery's own page also gets its chart."""
        change = pages.live_change(entry)
        if wanted.delivery is not None:
            change["chart"] = pages.chart(self.kpis.history(entry.delivery_id), entry.kpi)
        return change

    def _delivery(self, request: Request, identity: Identity, delivery_id: str) -> Response | None:
        cursor = self.kpis.cursor()  # before the entry: live updates may repeat a change, never miss one
        entry = self.kpis.get(delivery_id)
        if "text/html" not in request.headers.get("accept", ""):
            # The KPI record exactly as the topic has it, from any instance (scripts and today's clients); one this
            # view has not read yet, from the owner's own state when this instance owns it.
            kpi = entry.kpi if entry else self._owner_state.delivery_kpi(delivery_id) if self._owner_state else None
            return _json(200, kpi) if kpi else _json(404, {"error": f"unknown delivery {delivery_id!r}"})
        if entry is None:
            return self._error(request, identity, 404, f"No delivery {delivery_id!r}.")
        # The page is made here, never forwarded: its form tokens are checked here when the user acts (each
        # instance's own secret without sendtrack_secret_file) and its cursor is this view's. Only the sending
        # logs come from the owner.
        owner, problem = self._owner_url(request, entry.partition)
        try:
            logs = self._sending_logs(request, entry.delivery_id, self._logs_source(request, owner), problem)
        except OwnerUnreachable as exc:
            return self._unreachable(request, owner or "", entry.partition, exc)
        return self._delivery_page(request, identity, entry, cursor, logs)

    def _logs_source(self, request: Request, owner: str | None) -> OwnerState | OwnerClient | None:
        if owner is None:
            return self._owner_state
        return OwnerClient(request, owner, self._forward_timeout_s, self._forward_context)

    def _sending_logs(
        self, request: Request, delivery_id: str, source: OwnerState | OwnerClient | None, problem: str | None
    ) -> dict[str, Any]:
        """The page's sending logs part: a page of messages by status, and the message looked up, or the problem."""
        after, message_id = _param(request, "after"), _param(request, "message")
        status = _status_param(request, FAILED)
        logs: dict[str, Any] = {
            "problem": problem,
            "after": after,
            "message_query": message_id,
            "status": status or ALL,
            "statuses": (*STATUSES, ALL),
        }
        if problem is not None or source is None:
            return logs
        try:
            logs["page"] = source.messages(delivery_id, status, after, PAGE_SIZE)
            logs["message"] = source.message(delivery_id, message_id) if message_id else None
        except OwnerUnreachable:
            raise  # the browser goes to the owner itself
        except Exception as exc:  # the partition moved away mid-read: the KPIs still show
            self._log.warning("sending_logs_unavailable", delivery_id=delivery_id, error=str(exc))
            if self._owners is not None:
                self._owners.invalidate()
            logs["problem"] = "The sending logs could not be read here just now; reload in a moment."
        return logs

    def _delivery_page(
        self, request: Request, identity: Identity, entry: KpiEntry, cursor: str, logs: dict[str, Any]
    ) -> Response:
        delivery_id = entry.kpi["delivery_id"]
        notice = _param(request, "notice")
        return _html(
            200,
            pages.render(
                "delivery.html",
                identity=identity,
                kpi=entry.kpi,
                partition=entry.partition,
                cursor=cursor,
                logs=logs,
                chart=pages.chart(self.kpis.history(delivery_id), entry.kpi),
                can_confirm=self.auth.can_confirm(identity),
                can_act=self.auth.can_act(identity),
                csrf_tokens={a: self._csrf.token(identity, a, delivery_id) for a in (CONFIRM, COMPUTE_STATS)}
                if identity.authenticated
                else {},
                notice={"kind": "ok", "text": MESSAGES[notice]} if notice in (CONFIRM, COMPUTE_STATS) else None,
            ),
        )

    def _api_failed(self, request: Request, identity: Identity, delivery_id: str) -> Response:
        """The failed messages a page at a time (`failed`: the name clients of the first API read)."""
        return self._api_messages(request, delivery_id, FAILED, "failed")

    def _api_messages(self, request: Request, delivery_id: str, status: str | None, key: str) -> Response:
        after = _param(request, "after")
        limit = min(_int_param(request, "limit", PAGE_SIZE), MAX_PAGE_SIZE)

        def local() -> Response:
            page = self._state().messages(delivery_id, status, after, limit)
            rows = [asdict(row) for row in page.rows]
            return _json(200, {"delivery_id": delivery_id, key: rows, "next_after": page.next_after})

        return self._owner_json(request, delivery_id, local)

    def _api_message(self, request: Request, identity: Identity, delivery_id: str) -> Response:
        """One message with `message_id`; else the messages a page at a time, by `status` when given."""
        message_id = _param(request, "message_id")
        if not message_id:
            return self._api_messages(request, delivery_id, _status_param(request, None), "messages")

        def local() -> Response:
            detail = self._state().message(delivery_id, message_id)
            if detail is None:
                return _json(404, {"error": f"no message {message_id!r} in delivery {delivery_id!r}"})
            return _json(200, {"delivery_id": delivery_id, **asdict(detail)})

        return self._owner_json(request, delivery_id, local)

    def _export(self, request: Request, identity: Identity, delivery_id: str) -> Response:
        """Every message of the delivery as CSV, streamed from the owner a page at a time (bounded memory)."""
        entry = self.kpis.get(delivery_id)
        if entry is None:
            return self._error(request, identity, 404, f"No delivery {delivery_id!r}.")

        def local(problem: str | None) -> Response:
            if problem is not None:
                return self._error(request, identity, 503, problem, [("Retry-After", "1")])
            filename = "sending-logs-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in delivery_id)[:100]
            disposition = [("Content-Disposition", f'attachment; filename="{filename}.csv"')]
            return Response(200, self._csv_rows(entry), "text/csv; charset=utf-8", disposition)

        return self._at_owner(request, entry, local)

    def _csv_rows(self, entry: KpiEntry) -> Iterator[bytes]:
        yield csv_line(("message_id", "status", "reason", "events", "status_changes"))
        after: str | None = None
        while True:
            if entry.partition not in self._owned():  # moved away mid-export: say so rather than end short silently
                yield b"# incomplete: the delivery's partition moved to another instance; download again\r\n"
                return
            page = self._state().messages(entry.delivery_id, None, after, EXPORT_PAGE)
            yield b"".join(
                csv_line((r.message_id, r.status or "", r.reason or "", " ".join(r.events), str(r.changes)))
                for r in page.rows
            )
            if page.next_after is None:
                return
            after = page.next_after

    # -- where message-level state lives ---------------------------------------------------------------------
    def _owner_json(self, request: Request, delivery_id: str, local: Callable[[], Response]) -> Response:
        entry = self.kpis.get(delivery_id)
        if entry is None:
            return _json(404, {"error": f"unknown delivery {delivery_id!r}"})
        return self._at_owner(
            request,
            entry,
            lambda problem: local() if problem is None else _json(503, {"error": problem}, [("Retry-After", "1")]),
        )

    def _at_owner(self, request: Request, entry: KpiEntry, local: Callable[[str | None], Response]) -> Response:
        """Answered here when this instance owns the partition, else by the owner: forwarded, or redirected
        when it cannot be reached from here. `local` gets the problem to show when nobody can answer."""
        owner, problem = self._owner_url(request, entry.partition)
        if owner is None:
            return local(problem)
        assert self._owners is not None  # an owner was found with it
        try:
            answer = forward(request, owner, self._forward_timeout_s, self._forward_context)
        except OSError as exc:
            return self._unreachable(request, owner, entry.partition, exc)
        if answer.status >= 500:
            self._owners.invalidate()
        return answer

    def _owner_url(self, request: Request, partition: int) -> tuple[str | None, str | None]:
        """Where a delivery's partition lives (`_owner_of`)."""
        return self._owner_of(request, partition, self._owners, self._owned(), "The sending logs")

    def _owner_of(
        self, request: Request, partition: int, owners: Owners | None, owned: set[int], what: str
    ) -> tuple[str | None, str | None]:
        """(the other instance to ask, the problem to show instead); both None when the partition is owned here.
        `owners` is the map of the partition's consumer group, `owned` this instance's partitions of it."""
        if partition in owned:
            return None, None
        if is_routed(request) or owners is None:
            return None, f"{what} live with the owner of partition {partition}, not here; retry shortly."
        owner = owners.owner_of(partition)
        if owner is None or owner == self._advertised_url:
            return None, f"No instance owns partition {partition} right now (a rebalance?); retry shortly."
        return owner, None

    def _unreachable(
        self, request: Request, owner: str, partition: int, exc: Exception, owners: Owners | None = None
    ) -> Response:
        """The owner cannot be reached from here: the browser is sent to it, marked as routed (a POST stays one:
        307). `owners` is the map that named it (the delivery stage's by default), asked again next time."""
        self._log.warning("forward_failed", owner=owner, partition=partition, error=str(exc))
        stale = owners or self._owners
        if stale is not None:
            stale.invalidate()
        return redirect(request, owner)

    def _addresses_owned(self) -> set[int]:
        return self._addresses.owned() if self._addresses is not None else set()

    def _owned(self) -> set[int]:
        return self._owner_state.owned_partitions() if self._owner_state is not None else set()

    def _state(self) -> OwnerState:
        assert self._owner_state is not None  # only called for an owned partition
        return self._owner_state

    # -- addresses -------------------------------------------------------------------------------------------------
    def _address_refusal(self, request: Request, identity: Identity | None) -> Response | None:
        """Address pages are personal data: a verified user with view_addresses, and a quarantine to ask."""
        if self._addresses is None:
            return self._error(request, identity, 404, "No address pages: the quarantine is off (--quarantine).")
        if identity is None:
            return self._error(request, identity, 401, "Sign in to see addresses.", self.auth.challenges())
        if not self.auth.can_view_addresses(identity):
            return self._error(request, identity, 403, "Address pages need the View addresses role.")
        return None

    def _address_search(self, request: Request, identity: Identity) -> Response:
        """A page of its own with the address search (the list has it too)."""
        refusal = self._address_refusal(request, identity)
        return refusal or _html(200, pages.render("address.html", identity=identity, address=None))

    def _address_page(self, request: Request, identity: Identity | None) -> Response:
        """The searched address's page: its status and recipient history from the owner, made here; 404 when no
        instance knows the address."""
        refusal = self._address_refusal(request, identity)
        if refusal is not None:
            return refusal
        assert identity is not None
        if not same_origin(request):  # a search posted by another site would be a view in the user's name
            return self._error(request, identity, 403, "The search came from another site.")
        address = _address(request)
        found = self._address_record(request, identity, address)
        if isinstance(found, Response):
            return found
        return self._address_html(identity, address, found)

    def _address_html(
        self, identity: Identity, address: str, record: dict[str, Any] | None, notice: str | None = None
    ) -> Response:
        can_release = self.auth.can_release_addresses(identity)
        body = pages.render(
            "address.html",
            identity=identity,
            address=address,
            record=record,
            rows=history_rows(record, lambda d: self.kpis.get(d) is not None) if record else [],
            can_release=can_release and releasable(record),
            csrf_token=self._csrf.token(identity, RELEASE_ACTION, address) if can_release else "",
            notice={"kind": "ok", "text": notice} if notice else None,
        )
        return _html(200 if record is not None or notice else 404, body, [("Cache-Control", "no-store")])

    def _api_address(self, request: Request, identity: Identity | None) -> Response:
        """`{"address": ...}` -> its AddressStatus record, from its owner (forwarded there when elsewhere)."""
        refusal = self._address_refusal(request, identity)
        if refusal is not None:
            return refusal
        assert identity is not None
        if media_type(request) != JSON:
            return _json(415, {"error": 'Send application/json: {"address": ...}'})
        address = _address(request)
        found = self._address_record(request, identity, address)
        if isinstance(found, Response):
            return found
        if found is None:
            return _json(404, {"error": "no record of this address"}, [("Cache-Control", "no-store")])
        return _json(200, found, [("Cache-Control", "no-store")])

    def _address_record(self, request: Request, identity: Identity, address: str) -> dict[str, Any] | Response | None:
        """The address's record (None: unknown) from the owner of its partition: here, or asked of the owner; else
        the answer to give instead (the problem, or the browser sent to an owner this instance cannot reach)."""
        placement = self._addresses
        assert placement is not None
        # Every instance that shows or hands out the record says so (a peer asking the owner too: a request header
        # that claimed to be a peer's must not be a way to look unseen).
        self._log.info("address_viewed", user=identity.user, auth=identity.method, address_ref=address_ref(address))
        try:
            partition = placement.partition(address)
        except LookupError as exc:  # no address.signals yet, or no broker
            self._log.warning("address_partition_unknown", error=str(exc))
            return self._error(request, identity, 503, "The quarantine's topic cannot be read now; retry shortly.")
        owner, problem = self._owner_of(request, partition, placement.owners, placement.owned(), "Address records")
        if problem is not None:
            return self._error(request, identity, 503, problem, [("Retry-After", "1")])
        if owner is None:
            assert placement.state is not None  # the partition is owned here
            return placement.state.committed_status(address)
        try:
            return ask_owner(request, owner, address, self._forward_timeout_s, self._forward_context)
        except OwnerUnreachable as exc:
            return self._unreachable(request, owner, partition, exc, placement.owners)
        except OwnerAnswerError as exc:  # it lost the partition meanwhile, or failed
            self._log.warning("address_record_unavailable", owner=owner, partition=partition, error=str(exc))
            assert placement.owners is not None
            placement.owners.invalidate()
            return self._error(request, identity, 503, "The address's record could not be read just now; retry.")

    def _form_release(self, request: Request, identity: Identity | None) -> Response:
        """The address page's Release button: a form with the address and its token; the page again, with a notice."""
        if self._addresses is None:
            return self._error(request, identity, 404, "No address pages: the quarantine is off (--quarantine).")
        address = _address(request)
        if identity is not None and identity.authenticated:
            problem = self._csrf.form_problem(request, identity, RELEASE_ACTION, address)
            if problem is not None:
                outcome = self.actions.deny_address(
                    RELEASE_ACTION, problem, identity, address, 403, "The form was stale or forged."
                )
                return self._error(request, identity, outcome.status, outcome.message)
        outcome = self._release(request, identity, address)
        if outcome.status != 202:
            return self._error(request, identity, outcome.status, outcome.message, self._outcome_headers(outcome))
        assert identity is not None
        # Not the record again: the release is not applied yet, and a redirect to an owner must never repeat it.
        return self._address_html(identity, address, None, outcome.message)

    def _api_release(self, request: Request, identity: Identity | None) -> Response:
        if self._addresses is None:
            return _json(404, {"error": "no address pages: the quarantine is off (--quarantine)"})
        address = _address(request)
        if identity is not None and media_type(request) != JSON:  # a form cannot send JSON: no token needed
            outcome = self.actions.deny_address(RELEASE_ACTION, "content_type", identity, address, 415, "Send JSON.")
        else:
            outcome = self._release(request, identity, address)
        body: dict[str, Any] = {"action": RELEASE_ACTION, "message": outcome.message}
        body |= (
            {"status": "accepted", "event_id": outcome.event_id} if outcome.status == 202 else {"error": outcome.reason}
        )
        return _json(outcome.status, body, self._outcome_headers(outcome))

    def _release(self, request: Request, identity: Identity | None, address: str) -> Outcome:
        user = identity.user if identity is not None and identity.authenticated else None
        if user is not None and not self._throttle.action_allowed(client_address(request), user):
            return self.actions.deny_address(
                RELEASE_ACTION, "rate_limited", identity, address, 429, "Too many actions."
            )
        return self.actions.release(identity, address)

    # -- actions ---------------------------------------------------------------------------------------------
    def _form_action(self, request: Request, identity: Identity | None, delivery_id: str, action: str) -> Response:
        if identity is not None and identity.authenticated:
            problem = self._csrf.form_problem(request, identity, action, delivery_id)
            if problem is not None:
                outcome = self.actions.deny(
                    action, problem, identity, delivery_id, 403, "The form was stale or forged."
                )
                return self._outcome_page(request, identity, delivery_id, outcome)
        outcome = self._act(request, action, identity, delivery_id)
        if outcome.status == 202:
            back = f"/deliveries/{routes.segment(delivery_id)}?notice={action}"
            return Response(303, b"", HTML, [("Location", back)])
        return self._outcome_page(request, identity, delivery_id, outcome)

    def _api_action(self, request: Request, identity: Identity | None, delivery_id: str, action: str) -> Response:
        if identity is not None and media_type(request) != JSON:  # a form cannot send JSON: no token needed
            outcome = self.actions.deny(action, "content_type", identity, delivery_id, 415, "Send application/json.")
        else:
            outcome = self._act(request, action, identity, delivery_id)
        body = {"action": action, "delivery_id": delivery_id, "message": outcome.message}
        if outcome.status == 202:
            body |= {"status": "accepted", "event_id": outcome.event_id}
        else:
            body |= {"error": outcome.reason}
        return _json(outcome.status, body, self._outcome_headers(outcome))

    def _act(self, request: Request, action: str, identity: Identity | None, delivery_id: str) -> Outcome:
        user = identity.user if identity is not None and identity.authenticated else None
        if user is not None and not self._throttle.action_allowed(client_address(request), user):
            return self.actions.deny(action, "rate_limited", identity, delivery_id, 429, "Too many actions; wait.")
        entry = self.kpis.get(delivery_id)
        kpi = entry.kpi if entry is not None else None
        if action == CONFIRM:
            return self.actions.confirm(identity, delivery_id, kpi)
        return self.actions.compute_stats(identity, delivery_id, kpi)

    def _outcome_page(
        self, request: Request, identity: Identity | None, delivery_id: str, outcome: Outcome
    ) -> Response:
        back = f"/deliveries/{routes.segment(delivery_id)}"
        return self._error(request, identity, outcome.status, outcome.message, self._outcome_headers(outcome), back)

    def _outcome_headers(self, outcome: Outcome) -> list[tuple[str, str]]:
        if outcome.status == 401:
            return self.auth.challenges()
        return self._retry_after() if outcome.status == 429 else []

    # -- plumbing --------------------------------------------------------------------------------------------
    def _error(
        self,
        request: Request,
        identity: Identity | None,
        status: int,
        message: str,
        headers: list[tuple[str, str]] | None = None,
        back: str | None = None,
    ) -> Response:
        if "text/html" not in request.headers.get("accept", ""):
            return _json(status, {"error": message}, headers or [])
        body = pages.render(
            "error.html",
            identity=identity,
            status=status,
            heading=_HEADINGS.get(status, "Error"),
            message=message,
            back=back,
        )
        return _html(status, body, headers or [])

    def _static(self, name: str) -> Response | None:
        asset = pages.static_asset(name)
        if asset is None:
            return None
        body, content_type = asset
        return Response(200, body, content_type, [("Cache-Control", "max-age=300")])


_HEADINGS = {
    400: "Bad request",
    401: "Sign in",
    403: "Not allowed",
    404: "Not found",
    409: "Not now",
    415: "Unsupported",
    429: "Slow down",
    503: "Unavailable",
}


def _param(request: Request, name: str) -> str | None:
    values = request.query.get(name)
    return values[0] if values and values[0] else None


class BadRequest(ValueError):
    """A parameter that is not what it should be: answered 400, never a traceback."""


def _address(request: Request) -> str:
    """The normal address a form or a JSON body names; a 400 when it names none."""
    try:
        return address_of(request)
    except AddressProblem as exc:
        raise BadRequest(str(exc)) from None


def _int_param(request: Request, name: str, default: int) -> int:
    value = _param(request, name)
    if value is None:
        return default
    number = count(value)
    if not number:
        raise BadRequest(f"{name} must be a positive number")
    return number


@dataclass(frozen=True)
class _Wanted:
    """Which changes a live reader asked for."""

    delivery: str | None
    search: str

    def takes(self, entry: KpiEntry) -> bool:
        if self.delivery is not None:
            return entry.delivery_id == self.delivery
        return self.search.casefold() in entry.delivery_id.casefold()


@dataclass(frozen=True)
class ListQuery:
    state: str | None
    search: str
    before: int | None  # a page cursor: the change number to go on below


def _list_query(request: Request, cursor_name: str = "before") -> ListQuery:
    state = _param(request, "state")
    if state is not None and state not in pages.STATES:
        raise BadRequest(f"state must be one of {', '.join(pages.STATES)}")
    before = _param(request, cursor_name)
    if before is not None and count(before) is None:
        raise BadRequest(f"{cursor_name} must be a number")
    return ListQuery(state, (_param(request, "q") or "")[:MAX_SEARCH], count(before))


def _status_param(request: Request, default: str | None) -> str | None:
    """A message status to list (None: all of them)."""
    status = _param(request, "status") or default
    if status not in (*STATUSES, ALL, None):
        raise BadRequest(f"status must be one of {', '.join((*STATUSES, ALL))}")
    return None if status == ALL else status


def csv_line(fields: tuple[str, ...]) -> bytes:
    """One CSV record; a field a spreadsheet would run as a formula is quoted as text (a leading ' )."""
    out = io.StringIO()
    csv.writer(out).writerow(["'" + f if f[:1] in ("=", "+", "-", "@") else f for f in fields])
    return out.getvalue().encode()


def _cursor_param(request: Request) -> str | None:
    """A change cursor `<epoch>:<seq>`; a foreign one is fine (it gets everything), a malformed one is a 400."""
    cursor = request.headers.get("last-event-id") or _param(request, "cursor")
    epoch, _, seq = (cursor or "0:0").partition(":")
    if len(epoch) > 16 or not all(c in "0123456789abcdef" for c in epoch) or count(seq) is None:
        raise BadRequest("cursor must be <epoch>:<number>")
    return cursor


def _json(status: int, body: Any, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, json.dumps(body).encode(), "application/json", headers or [])


def _html(status: int, body: bytes, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, body, HTML, headers or [])
