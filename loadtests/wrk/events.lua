-- GET /events?limit=100&after=…: a backlog page of 100 events of the change feed. Feed
-- cursors are signed by the server and bound to its database, so the driver walks the feed
-- once from the oldest event kept and passes in BENCH_EVENT_CURSORS (comma-separated) real
-- cursors spread over the seeded backlog, each followed by at least 100 events; each
-- request takes one at random.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

local paths = {}
for cursor in string.gmatch(os.getenv("BENCH_EVENT_CURSORS") or "", "[^,]+") do
    paths[#paths + 1] = "/events?limit=100&after=" .. cursor
end
assert(#paths > 0, "BENCH_EVENT_CURSORS is empty")

function request()
    return get(paths[math.random(1, #paths)])
end
