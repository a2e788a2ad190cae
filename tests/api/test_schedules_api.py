"""Schedules endpoints: list, create, delete."""

from __future__ import annotations


from tests.api.helpers import assert_error, function_body
from tests.support import fetch


async def test_create_list_delete_schedule(client, admin, settings) -> None:
    headers = admin["headers"]
    await client.post("/tasks/v1/functions", json=function_body("echo-fn"), headers=headers)
    response = await client.post("/tasks/v1/schedules", json={"functionName": "echo-fn", "interval": 60,
                                                              "data": {"report": "daily"}, "priority": 2,
                                                              "startTimestamp": "2030-01-01T00:00:00.000Z"},
                                 headers=headers)
    assert response.status_code == 200, response.text
    schedule = response.json()
    assert schedule["interval"] == 60
    assert schedule["data"] == {"report": "daily"}
    assert schedule["priority"] == 2
    assert schedule["startTimestamp"] == "2030-01-01T00:00:00.000Z"
    assert schedule["nextTimestamp"] == "2030-01-01T00:00:00.000Z"
    assert schedule["createdByUserId"] == admin["id"]
    immediate = (await client.post("/tasks/v1/schedules/", json={"functionName": "echo-fn", "interval": 5},
                                   headers=headers)).json()
    assert immediate["startTimestamp"] == immediate["nextTimestamp"]
    listed = (await client.get("/tasks/v1/schedules?gt(interval,10)", headers=headers)).json()
    assert [item["id"] for item in listed["data"]] == [schedule["id"]]
    assert listed["page"]["total"] == 1
    everything = (await client.get("/tasks/v1/schedules/", headers=headers)).json()
    assert everything["page"]["total"] == 2
    assert (await client.delete(f"/tasks/v1/schedules/{schedule['id']}", headers=headers)).json() == {
        "affectedRecords": 1}
    rows = await fetch(settings, "SELECT id FROM schedules")
    assert [row["id"] for row in rows] == [immediate["id"]]


async def test_schedule_errors(client, admin) -> None:
    headers = admin["headers"]
    assert_error(await client.post("/tasks/v1/schedules", json={"functionName": "none-fn", "interval": 5},
                                   headers=headers), 16, 404)
    assert_error(await client.post("/tasks/v1/schedules", json={"functionName": "none-fn"}, headers=headers), 14, 400)
    assert_error(await client.post("/tasks/v1/schedules", json={"functionName": "x", "interval": 0}, headers=headers),
                 15, 400)
    assert_error(await client.post("/tasks/v1/schedules", json={"functionName": "x", "interval": "5"},
                                   headers=headers), 15, 400)
    assert_error(await client.post("/tasks/v1/schedules", headers=headers), 13, 400)
    assert_error(await client.delete("/tasks/v1/schedules/" + "a" * 24, headers=headers), 16, 404)
    assert_error(await client.delete("/tasks/v1/schedules/abc", headers=headers), 12, 400)
    assert_error(await client.get("/tasks/v1/schedules?eq(cron,1)", headers=headers), 19, 400)
    assert_error(await client.get("/tasks/v1/schedules"), 104, 401)



async def test_schedule_shows_next_fire_times(client, admin) -> None:
    headers = admin["headers"]
    await client.post("/tasks/v1/functions", json=function_body("grid-fn"), headers=headers)
    response = await client.post("/tasks/v1/schedules", json={"functionName": "grid-fn", "interval": 3600,
                                                              "startTimestamp": "2030-01-01T00:00:00.000Z"},
                                 headers=headers)
    schedule = response.json()
    assert schedule["nextFireTimestamps"] == [
        "2030-01-01T00:00:00.000Z", "2030-01-01T01:00:00.000Z", "2030-01-01T02:00:00.000Z",
        "2030-01-01T03:00:00.000Z", "2030-01-01T04:00:00.000Z"]
    assert schedule["paused"] is False
    assert schedule["catchUp"] == "latest"
    listed = (await client.get("/tasks/v1/schedules", headers=headers)).json()
    assert listed["data"][0]["nextFireTimestamps"][0] == "2030-01-01T00:00:00.000Z"
