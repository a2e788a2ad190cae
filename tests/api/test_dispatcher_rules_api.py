"""Rule fields of dispatchers and task actions over HTTP: stored, returned and checked."""

from __future__ import annotations

import pytest

from tests.api.helpers import assert_error

FILTER = {"data": {"status": ["analyzed"], "data": {"systolic": [{"numeric": [">=", 140]}]}}}
RULED_ACTION = {
    "type": "task", "functionName": "echo-fn", "data": {"n": 1},
    "input": {"documentId.$": "$.data.documentId", "fixed": "x"},
    "includeEvent": False, "deduplicationKey": "$.data.documentId",
    "concurrencyKey": "patient-{$.data.userId}", "delaySeconds": 30, "priority": 5,
}


async def _post(client, admin, body: dict):
    return await client.post("/dispatchers/v1/", json=body, headers=admin["headers"])


async def test_rule_fields_round_trip(client, admin) -> None:
    body = {"eventType": "document.transitioned", "name": "ruled", "filter": FILTER,
            "transition": {"name": "analyze", "toStatus": "analyzed"}, "actions": [RULED_ACTION]}
    response = await _post(client, admin, body)
    assert response.status_code == 200, response.text
    created = response.json()
    assert created["filter"] == FILTER
    assert created["transition"] == {"name": "analyze", "toStatus": "analyzed"}
    [action] = created["actions"]
    for field in ("input", "includeEvent", "deduplicationKey", "concurrencyKey", "delaySeconds", "priority"):
        assert action[field] == RULED_ACTION[field], field
    [listed] = (await client.get(f"/dispatchers/v1/?eq(id,{created['id']})", headers=admin["headers"])).json()["data"]
    assert listed == created


async def test_plain_dispatchers_show_no_rule_fields(client, admin) -> None:
    created = (await _post(client, admin, {"eventType": "user_deleted",
                                           "actions": [{"type": "task", "functionName": "f"}]})).json()
    assert "filter" not in created
    assert "transition" not in created
    assert set(created["actions"][0]) == {"id", "type", "functionName", "data", "tags"}


@pytest.mark.parametrize(("body", "fragment"), [
    ({"filter": ["a"]}, "filter must be a JSON object"),
    ({"filter": {"data": {"status": [{"prefix": 5}]}}}, "prefix"),
    ({"filter": {"data": {"status": "analyzed"}}}, "data.status"),
    ({"transition": {"toStatus": "x"}}, "transition applies to eventType 'document.transitioned'"),
    ({"eventType": "document.transitioned", "transition": {"state": "x"}}, "unknown field 'state'"),
    ({"eventType": "document.transitioned", "transition": {"toStatus": ""}}, "transition.toStatus"),
    ({"eventType": "document.transitioned", "transition": {"toStatus": "a"},
      "filter": {"data": {"toStatus": ["b"]}}}, "both constrain"),
    ({"actions": [{**RULED_ACTION, "input": {"a.$": "data.x"}}]}, "must start with $"),
    ({"actions": [{**RULED_ACTION, "input": "text"}]}, "input: must be a JSON object"),
    ({"actions": [{**RULED_ACTION, "deduplicationKey": "{$.x"}]}, "unmatched"),
    ({"actions": [{**RULED_ACTION, "concurrencyKey": ""}]}, "concurrencyKey"),
    ({"actions": [{**RULED_ACTION, "delaySeconds": -1}]}, "delaySeconds"),
    ({"actions": [{**RULED_ACTION, "delaySeconds": "5"}]}, "delaySeconds"),
    ({"actions": [{**RULED_ACTION, "startTimestamp": "2030-01-01T00:00:00Z"}]}, "not both"),
    ({"actions": [{**RULED_ACTION, "priority": 1.5}]}, "priority"),
    ({"actions": [{**RULED_ACTION, "priority": 2**63}]}, "priority"),
    ({"actions": [{**RULED_ACTION, "includeEvent": "no"}]}, "includeEvent"),
    ({"actions": [{"type": "mail", "recipients": {"to": ["a@example.com"]}, "templateId": "t" * 24,
                   "input": {"a": 1}}]}, "task actions only"),
])
async def test_malformed_rules_are_rejected_with_the_field(client, admin, body: dict, fragment: str) -> None:
    response = await _post(client, admin, {"eventType": "document.created", **body})
    assert_error(response, 15, 400)
    assert fragment in response.json()["message"]
    listed = (await client.get("/dispatchers/v1/", headers=admin["headers"])).json()
    assert listed["page"]["total"] == 0


async def test_updates_check_the_rules_as_they_will_be(client, admin) -> None:
    headers = admin["headers"]
    created = (await _post(client, admin, {"eventType": "document.transitioned", "name": "t",
                                           "transition": {"toStatus": "analyzed"},
                                           "actions": [RULED_ACTION]})).json()
    path = f"/dispatchers/v1/{created['id']}"
    # Moving away from transitions while the transition stays is refused; with it cleared, allowed.
    assert_error(await client.put(path, json={"eventType": "document.created"}, headers=headers), 15, 400)
    assert_error(await client.put(path, json={"filter": {"data": {"x": [{"numeric": ["<", "a"]}]}}},
                                  headers=headers), 15, 400)
    response = await client.put(path, json={"eventType": "document.created", "transition": None,
                                            "filter": {"data": {"status": ["active"]}}}, headers=headers)
    assert response.json() == {"affectedRecords": 1}
    current = (await client.get(f"/dispatchers/v1/?eq(id,{created['id']})", headers=headers)).json()["data"][0]
    assert "transition" not in current
    assert current["filter"] == {"data": {"status": ["active"]}}
    assert (await client.put(path, json={"filter": None}, headers=headers)).json() == {"affectedRecords": 1}
    current = (await client.get(f"/dispatchers/v1/?eq(id,{created['id']})", headers=headers)).json()["data"][0]
    assert "filter" not in current

    action_path = f"{path}/actions/{created['actions'][0]['id']}"
    # The stored delaySeconds forbids a fixed start time until it is cleared.
    assert_error(await client.put(action_path, json={"startTimestamp": "2030-01-01T00:00:00Z"}, headers=headers),
                 15, 400)
    assert_error(await client.put(action_path, json={"input": {"a.$": 1}}, headers=headers), 15, 400)
    response = await client.put(action_path, json={"startTimestamp": "2030-01-01T00:00:00Z", "delaySeconds": None,
                                                   "priority": -3, "input": None}, headers=headers)
    assert response.json() == {"affectedRecords": 1}
    [action] = (await client.get(f"/dispatchers/v1/?eq(id,{created['id']})", headers=headers)).json()["data"][0][
        "actions"]
    assert action["startTimestamp"] == 1893456000000
    assert action["priority"] == -3
    assert "delaySeconds" not in action
    assert "input" not in action
