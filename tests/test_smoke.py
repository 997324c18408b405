from tests.helpers import assert_problem


async def test_create_and_get_user(client, email, db):
    created = await client.post("/users", json={"email": email, "name": "Ada"})
    assert created.status_code == 201
    got = await client.get(created.headers["location"])
    assert got.json() == created.json()
    assert await db.fetchval("SELECT name FROM users WHERE email = $1", email) == "Ada"


async def test_unknown_route(client):
    assert_problem(await client.get("/nope"), 404)
