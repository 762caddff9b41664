#!/usr/bin/env python3
"""Publish to an ssehub hub from Python, with nothing but the standard library.

    python3 publish.py --url http://127.0.0.1:8080 --key "$SSEHUB_PUBLISH_KEY" \
        comments/123 '{"text": "hello"}' --event comment-added

Prints the event id. Or, from your own code:

    from publish import Publisher
    hub = Publisher("http://127.0.0.1:8080", key="...")
    event_id = hub.publish("comments/123", {"text": "hello"}, event="comment-added")
    ids = hub.publish_many([("comments/123", {"n": 1}, None), ("votes/123", 5, "vote")])

Every call carries an Idempotency-Key (a fresh one per call unless you pass your own), and a
call that failed on the network or got 503 is retried with the SAME key: the hub stores the
event once however many times the request reached it (PROTOCOL.md, "Publishing").
"""

import argparse
import json
import random
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid


class PublishError(Exception):
    """The hub refused the publish (4xx, or 5xx after every retry)."""

    def __init__(self, status, message):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class Publisher:
    """An ssehub hub's publish API: ``POST /v1/publish/{channel}`` and ``POST /v1/publish``."""

    def __init__(self, url, key, retries=5, timeout=10.0):
        self.url = url.rstrip("/")
        self.key = key
        self.retries = retries
        self.timeout = timeout

    def publish(self, channel, data, event=None, idempotency_key=None):
        """Publish one event; returns its id."""
        body = {"data": data}
        if event is not None:
            body["event"] = event
        path = "/v1/publish/" + urllib.parse.quote(channel, safe="/@")
        return self._post(path, body, idempotency_key)["id"]

    def publish_many(self, events, idempotency_key=None):
        """Publish ``(channel, data, event_or_None)`` tuples in order; returns their ids."""
        batch = []
        for channel, data, event in events:
            entry = {"channel": channel, "data": data}
            if event is not None:
                entry["event"] = event
            batch.append(entry)
        return self._post("/v1/publish", {"events": batch}, idempotency_key)["ids"]

    def _post(self, path, body, idempotency_key):
        key = idempotency_key or str(uuid.uuid4())
        payload = json.dumps(body).encode()
        delay = 0.2
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(
                self.url + path,
                data=payload,
                method="POST",
                headers={
                    "Content-Type": "application/json",
                    "Authorization": "Bearer " + self.key,
                    "Idempotency-Key": key,
                },
            )
            retry_after = None
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.load(response)
            except urllib.error.HTTPError as e:
                message = _error_message(e)
                if e.code != 503 or attempt == self.retries:
                    raise PublishError(e.code, message) from None
                retry_after = e.headers.get("Retry-After")
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                # The request may or may not have reached the hub: the same key makes the
                # retry safe either way.
                if attempt == self.retries:
                    raise PublishError(0, str(e)) from None
            wait = float(retry_after) if retry_after else random.uniform(0, delay)
            time.sleep(min(wait, 30.0))
            delay = min(delay * 2, 10.0)
        raise AssertionError("unreachable")


def _error_message(e):
    try:
        return json.load(e).get("error", "")
    except (ValueError, AttributeError):
        return e.reason


def main(argv=None):
    p = argparse.ArgumentParser(description="Publish one event to an ssehub hub.")
    p.add_argument("channel")
    p.add_argument("data", help="the event's data, as JSON")
    p.add_argument("--event", help="the event's name")
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--key", required=True, help="a publish key, or a JWT allowed to publish")
    p.add_argument("--idempotency-key")
    args = p.parse_args(argv)
    try:
        data = json.loads(args.data)
    except ValueError as e:
        p.error(f"data is not JSON: {e}")
    hub = Publisher(args.url, args.key)
    try:
        print(hub.publish(args.channel, data, args.event, args.idempotency_key))
    except PublishError as e:
        print(f"publish failed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
