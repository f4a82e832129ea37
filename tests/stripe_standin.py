"""A local stand-in for the few Stripe endpoints Djinn calls, for the real ``stripe`` SDK to talk to
(``STRIPE_API_BASE`` points it here), and a payer: Checkout and portal pages that, when a button is pressed,
send Djinn the webhook events Stripe would, signed for real with the webhook secret.

    with StripeStandin(webhook_url, secret) as stripe:   # stripe.url is the API base
        ...
        stripe.requests      # every API request: (method, path, form fields, headers)
        stripe.send("invoice.paid", {...})   # a signed event to Djinn; returns the HTTP status

Loopback only.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import itertools
import json
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

MONTH_S = 30 * 24 * 3600


def signature(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """A ``Stripe-Signature`` header for ``payload``, as Stripe computes it."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def event(event_type: str, obj: dict[str, Any], *, created: int | None = None, event_id: str | None = None) -> dict:
    return {
        "id": event_id or f"evt_{next(_ids)}",
        "object": "event",
        "type": event_type,
        "created": int(time.time()) if created is None else created,
        "api_version": "2026-10-28.endive",
        "livemode": False,
        "data": {"object": obj},
    }


def subscription(
    sub_id: str, *, customer: str, price: str, status: str = "active", user_id: int | None = None, **fields: Any
) -> dict:
    now = int(time.time())
    return {
        "id": sub_id,
        "object": "subscription",
        "customer": customer,
        "status": status,
        "cancel_at_period_end": False,
        "metadata": {"djinn_user_id": str(user_id)} if user_id is not None else {},
        "items": {
            "object": "list",
            "data": [
                {
                    "id": f"si_{sub_id}",
                    "object": "subscription_item",
                    # As Stripe sends a price: the SDK turns the *_decimal strings into Decimals.
                    "price": {
                        "id": price,
                        "object": "price",
                        "currency": "usd",
                        "unit_amount": 2000,
                        "unit_amount_decimal": "2000",
                    },
                    "current_period_start": now,
                    "current_period_end": now + MONTH_S,
                }
            ],
        },
        **fields,
    }


def invoice(sub_id: str, *, customer: str) -> dict:
    return {
        "id": f"in_{next(_ids)}",
        "object": "invoice",
        "customer": customer,
        "parent": {"type": "subscription_details", "subscription_details": {"subscription": sub_id}},
    }


_ids = itertools.count(1)


class StripeStandin:
    def __init__(self, webhook_url: str, secret: str) -> None:
        self.webhook_url = webhook_url
        self.secret = secret
        self.requests: list[tuple[str, str, dict[str, str], dict[str, str]]] = []
        self.sessions: dict[str, dict[str, str]] = {}  # checkout and portal sessions, by id
        self.subscriptions: dict[str, dict[str, Any]] = {}  # by customer
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> StripeStandin:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def send(self, event_type: str, obj: dict[str, Any], **kwargs: Any) -> int:
        """Send Djinn a signed event; the HTTP status it answered."""
        return self.post_event(event(event_type, obj, **kwargs))

    def post_event(self, body: dict[str, Any], *, secret: str | None = None, timestamp: int | None = None) -> int:
        payload = json.dumps(body).encode()
        headers = {
            "Content-Type": "application/json",
            "Stripe-Signature": signature(payload, secret or self.secret, timestamp),
        }
        request = urllib.request.Request(self.webhook_url, data=payload, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    # -- what the SDK and the browser reach ------------------------------------------------------------

    def _api(self, method: str, path: str, fields: dict[str, str]) -> tuple[int, dict[str, Any]]:
        sessions = {
            "/v1/checkout/sessions": ("cs_test", "checkout.session", "pay"),
            "/v1/billing_portal/sessions": ("bps", "billing_portal.session", "portal"),
        }
        if method == "POST" and path in sessions:
            prefix, kind, page = sessions[path]
            session_id = f"{prefix}_{next(_ids)}"
            self.sessions[session_id] = fields
            body = {"id": session_id, "object": kind, "url": f"{self.url}/{page}/{session_id}"}
            return 200, {**body, "mode": fields.get("mode"), "customer": fields.get("customer")}
        if method == "DELETE" and path.startswith("/v1/subscriptions/"):
            sub_id = path.removeprefix("/v1/subscriptions/")
            return 200, {"id": sub_id, "object": "subscription", "status": "canceled"}
        return 404, {
            "error": {"type": "invalid_request_error", "message": f"Unrecognized request URL ({method}: {path})"}
        }

    def _pay(self, session_id: str) -> str:
        """Checkout paid: the subscription Stripe would make, its events sent; where the browser goes next."""
        fields = self.sessions[session_id]
        customer = fields.get("customer") or f"cus_{next(_ids)}"
        sub_id = f"sub_{next(_ids)}"
        sub = subscription(
            sub_id,
            customer=customer,
            price=fields["line_items[0][price]"],
            user_id=int(fields["subscription_data[metadata][djinn_user_id]"]),
        )
        self.subscriptions[customer] = sub
        created = int(time.time())
        self.send("customer.subscription.created", sub, created=created)
        self.send("invoice.paid", invoice(sub_id, customer=customer), created=created)
        return fields["success_url"]

    def _cancel(self, session_id: str) -> str:
        """In the portal, the plan cancelled at once: the deleted event sent; where the browser goes next."""
        fields = self.sessions[session_id]
        sub = {**self.subscriptions[fields["customer"]], "status": "canceled"}
        self.send("customer.subscription.deleted", sub)
        return fields["return_url"]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _page(self, title: str, button: str) -> None:
                body = (
                    f"<!doctype html><title>{html.escape(title)}</title><h1>{html.escape(title)}</h1>"
                    f'<form method="post"><button type="submit">{html.escape(button)}</button></form>'
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _redirect(self, location: str) -> None:
                self.send_response(303)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                if self.path.startswith("/pay/"):
                    self._page("Stripe stand-in: Checkout", "Pay")
                elif self.path.startswith("/portal/"):
                    self._page("Stripe stand-in: customer portal", "Cancel plan")
                else:
                    self._json(*standin._api("GET", self.path, {}))

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                fields = dict(parse_qsl(self.rfile.read(length).decode()))
                if self.path.startswith("/pay/"):
                    self._redirect(standin._pay(self.path.removeprefix("/pay/")))
                elif self.path.startswith("/portal/"):
                    self._redirect(standin._cancel(self.path.removeprefix("/portal/")))
                else:
                    standin.requests.append(("POST", self.path, fields, dict(self.headers)))
                    self._json(*standin._api("POST", self.path, fields))

            def do_DELETE(self) -> None:
                standin.requests.append(("DELETE", self.path, {}, dict(self.headers)))
                self._json(*standin._api("DELETE", self.path, {}))

            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Request-Id", f"req_{next(_ids)}")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
