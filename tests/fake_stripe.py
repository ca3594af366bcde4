"""A fake Stripe API on loopback for the billing tests (the real one cannot be
reached from here). It answers the calls our code makes, in Stripe's JSON
shapes, and builds the webhook events Stripe would send, signed with the
stripe library's own helper."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlparse

import stripe


def _id(prefix: str) -> str:
    return f"{prefix}_test_{uuid.uuid4().hex[:20]}"


class FakeStripe:
    def __init__(self) -> None:
        self.sessions: dict[str, dict] = {}
        self.refunds: list[dict] = []
        self.idempotent: dict[str, tuple[int, dict]] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FakeStripe:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- What the tests do "as the customer" or "as Stripe" ----------------------

    def pay(self, session_id: str, *, paid: bool = True) -> dict:
        session = self.sessions[session_id]
        session["status"] = "complete"
        session["payment_status"] = "paid" if paid else "unpaid"
        return session

    def charge(self, session_id: str, *, amount_refunded: int = 0) -> dict:
        session = self.sessions[session_id]
        return {
            "id": session["_charge"],
            "object": "charge",
            "amount": session["amount_total"],
            "amount_refunded": amount_refunded,
            "payment_intent": session["payment_intent"],
            "refunded": amount_refunded >= session["amount_total"],
            "currency": session["currency"],
        }

    def dispute(self, session_id: str, *, status: str = "needs_response", dispute_id: str | None = None) -> dict:
        session = self.sessions[session_id]
        return {
            "id": dispute_id or _id("dp"),
            "object": "dispute",
            "amount": session["amount_total"],
            "charge": session["_charge"],
            "payment_intent": session["payment_intent"],
            "status": status,
        }

    def event(self, kind: str, obj: dict) -> dict:
        public = {k: v for k, v in obj.items() if not k.startswith("_")}
        return {
            "id": _id("evt"),
            "object": "event",
            "type": kind,
            "api_version": "2025-01-01",
            "created": int(time.time()),
            "data": {"object": public},
            "livemode": False,
        }

    @staticmethod
    def sign(payload: str, secret: str, *, timestamp: int | None = None) -> str:
        return stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp=timestamp)

    # --- The HTTP side ------------------------------------------------------------

    def _create_session(self, form: dict) -> dict:
        amount = int(form["line_items[0][price_data][unit_amount]"]) * int(form.get("line_items[0][quantity]", 1))
        session_id = _id("cs")
        session = {
            "id": session_id,
            "object": "checkout.session",
            "mode": form["mode"],
            "status": "open",
            "payment_status": "unpaid",
            "amount_total": amount,
            "currency": form["line_items[0][price_data][currency]"],
            "client_reference_id": form.get("client_reference_id"),
            "customer_email": form.get("customer_email"),
            "metadata": {k[9:-1]: v for k, v in form.items() if k.startswith("metadata[")},
            "payment_intent": _id("pi"),
            "success_url": form["success_url"],
            "cancel_url": form["cancel_url"],
            "url": f"https://checkout.stripe.test/pay/{session_id}",
            "_charge": _id("ch"),
            "_line_items": [
                {
                    "id": _id("li"),
                    "object": "item",
                    "amount_total": amount,
                    "amount_subtotal": amount,
                    "currency": form["line_items[0][price_data][currency]"],
                    "quantity": 1,
                    "description": form.get("line_items[0][price_data][product_data][name]", ""),
                }
            ],
        }
        self.sessions[session_id] = session
        return session

    def _public(self, session: dict, *, expand: bool) -> dict:
        body = {k: v for k, v in session.items() if not k.startswith("_")}
        if expand:
            body["line_items"] = {
                "object": "list",
                "data": session["_line_items"],
                "has_more": False,
                "url": f"/v1/checkout/sessions/{session['id']}/line_items",
            }
        return body

    def _route(self, method: str, path: str, query: dict, form: dict) -> tuple[int, dict]:
        parts = path.strip("/").split("/")
        if method == "POST" and parts == ["v1", "checkout", "sessions"]:
            return 200, self._public(self._create_session(form), expand=False)
        if method == "GET" and parts == ["v1", "checkout", "sessions"]:
            found = [
                self._public(s, expand=False)
                for s in self.sessions.values()
                if s["payment_intent"] == query.get("payment_intent")
            ]
            return 200, {"object": "list", "data": found, "has_more": False, "url": "/v1/checkout/sessions"}
        if method == "GET" and parts[:3] == ["v1", "checkout", "sessions"] and len(parts) == 4:
            session = self.sessions.get(parts[3])
            if session is None:
                return 404, {"error": {"type": "invalid_request_error", "message": "No such checkout.session"}}
            return 200, self._public(session, expand="line_items" in query.get("expand[0]", ""))
        if method == "POST" and parts == ["v1", "refunds"]:
            refund = {
                "id": _id("re"),
                "object": "refund",
                "amount": int(form["amount"]),
                "payment_intent": form["payment_intent"],
                "status": "succeeded",
            }
            self.refunds.append(refund)
            return 200, refund
        return 404, {"error": {"type": "invalid_request_error", "message": f"no route {method} {path}"}}

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self, method: str) -> None:
                url = urlparse(self.path)
                query = dict(parse_qsl(url.query))
                length = int(self.headers.get("Content-Length") or 0)
                form = dict(parse_qsl(self.rfile.read(length).decode())) if length else {}
                key = self.headers.get("Idempotency-Key")
                with fake.lock:
                    fake.requests.append((method, url.path))
                    if key and (method, key) in fake.idempotent:
                        status, body = fake.idempotent[(method, key)]
                    else:
                        status, body = fake._route(method, url.path, query, form)
                        if key:
                            fake.idempotent[(method, key)] = (status, body)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Request-Id", _id("req"))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def log_message(self, *args) -> None:
                pass

        return Handler
