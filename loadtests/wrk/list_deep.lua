-- GET /posts?cursor=…: a page of 50 about 50,000 posts deep ("page 1,000"). Cursors are
-- signed by the server, so the driver walks the listing once and passes the real ones it
-- was given in BENCH_DEEP_CURSORS (comma-separated); each request takes one at random.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

local paths = {}
for cursor in string.gmatch(os.getenv("BENCH_DEEP_CURSORS") or "", "[^,]+") do
    paths[#paths + 1] = "/posts?limit=50&cursor=" .. cursor
end
assert(#paths > 0, "BENCH_DEEP_CURSORS is empty")

function request()
    return get(paths[math.random(1, #paths)])
end
