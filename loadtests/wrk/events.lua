-- GET /events?limit=100&after=…: a backlog page of 100 events of the change feed. Feed
-- cursors are bound to the server's database too: the driver walks the feed once from the
-- oldest event kept and passes in BENCH_EVENT_CURSORS cursors spread over the seeded
-- backlog, each followed by at least 100 events; each request takes one at random.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

local paths = cursor_paths("BENCH_EVENT_CURSORS", "/events?limit=100&after=")

function request()
    return get(paths[math.random(1, #paths)])
end
