"""The Deployment view end to end: two real instances, the embedded broker, a web config with users.

Any instance lists every delivery, shows any delivery's failed messages (asking the owner), and an
authorised user's confirmation reaches the owner as a CONFIRMED event with the verified identity.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.request

import bcrypt
import pytest

from consumer.cli.workload import WorkloadSpec, generate
from consumer.codec.schemas import DELIVERY_EVENT, load
from tests.service.harness import Pipeline, free_port, stop, wait_http


def get(url: str, user: str | None = None, accept: str = "application/json", data: bytes | None = None):
    headers = {"Accept": accept}
    if user:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:secret-{user}".encode()).decode()
    if data is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def fill(event: dict) -> dict:
    """Every field of the DeliveryEvent schema, defaults where the event says nothing."""
    return {f["name"]: event.get(f["name"], f.get("default")) for f in load(DELIVERY_EVENT).definition["fields"]}


def wait_listed(url: str, delivery_id: str, state: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        listed = json.loads(get(f"{url}/api/deliveries", "bob")[1])["deliveries"]
        if any(k["delivery_id"] == delivery_id and k["state"] == state for k in listed):
            return
        time.sleep(0.3)
    raise AssertionError(f"{delivery_id} never listed as {state} by {url}")


@pytest.fixture
def web_config(tmp_path):
    def hashed(user: str) -> str:
        return bcrypt.hashpw(f"secret-{user}".encode(), bcrypt.gensalt(4)).decode()

    path = tmp_path / "web.yml"
    path.write_text(
        "basic_auth_users:\n"
        f"  alice: '{hashed('alice')}'\n"
        f"  bob: '{hashed('bob')}'\n"
        "sendtrack_roles:\n"
        "  alice: [start_deliveries]\n"
        "  bob: [viewer]\n"
    )
    return path


def test_two_instances_serve_the_whole_cluster_and_route_to_owners(kafka, tmp_path, web_config):
    workload = generate(WorkloadSpec.ending_now(deliveries=6, messages=400, ended=2, seed=51))
    pipeline = Pipeline(kafka.bootstrap_servers, tmp_path, partitions=4)
    pipeline.produce_workload(workload)
    ports = {name: free_port() for name in ("a", "b")}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    processes = [
        pipeline.start(
            name,
            http_port=port,
            http_host="127.0.0.1",
            web_config=web_config,
            advertised_url=urls[name],
            web_peers=tuple(urls.values()),
        )
        for name, port in ports.items()
    ]
    try:
        for port in ports.values():
            wait_http(port, "/readyz", timeout_s=90)
        pipeline.wait_for_kpis(workload.expected, processes=processes)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # each instance's KPI view follows the topic
            listed = [json.loads(get(f"{url}/api/deliveries", "bob")[1])["deliveries"] for url in urls.values()]
            if all(len(each) == len(workload.expected) for each in listed):
                break
            time.sleep(0.5)
        for each in listed:
            assert {k["delivery_id"]: k["processed"] for k in each} == {
                d: e["processed"] for d, e in workload.expected.items()
            }
        assert get(f"{urls['a']}/api/deliveries")[0] == 401  # reading needs a user once a config is set

        owned = {name: set(json.loads(get(f"{url}/api/instance")[1])["partitions"]) for name, url in urls.items()}
        assert owned["a"] and owned["b"] and not owned["a"] & owned["b"]
        failing = max(workload.expected, key=lambda d: workload.expected[d]["failed"])
        for url in urls.values():  # whichever instance is asked, the owner's sending logs come back
            status, body = get(f"{url}/api/deliveries/{failing}/failed?limit=500", "bob")
            assert status == 200, body
            assert len(json.loads(body)["failed"]) == workload.expected[failing]["failed"]
            status, page = get(f"{url}/deliveries/{failing}", "bob", accept="text/html")
            assert status == 200 and b"Deployment" in page

        # A delivery awaiting confirmation: bob (no role) is refused, alice confirms through either instance.
        waiting = {
            "event_id": "await-prepared",
            "delivery_id": "await-1",
            "type": "PREPARED",
            "occurred_at": int(time.time() * 1000) - 1_000,
            "to_deliver": 10,
            "confirmation_required": True,
        }
        pipeline.produce_events(pipeline.topics.deliveries, DELIVERY_EVENT, [fill(waiting)])
        pipeline.wait_for_kpis({"await-1": {"state": "AWAITING_CONFIRMATION"}}, processes=processes)
        wait_listed(urls["b"], "await-1", "AWAITING_CONFIRMATION")
        assert get(f"{urls['b']}/api/deliveries/await-1/confirm", "bob", data=b"{}")[0] == 403
        assert get(f"{urls['b']}/api/deliveries/await-1/confirm", "alice", data=b"{}")[0] == 202
        kpi = pipeline.wait_for_kpis({"await-1": {"state": "CONFIRMED"}}, processes=processes)["await-1"]
        assert (kpi["state"], kpi["confirmations_rejected"]) == ("CONFIRMED", 1)
        for process in processes:
            assert stop(process) == 0
    finally:
        for process in processes:
            process.kill()
