-- GET /posts?cursor=…: a page of 50 about 50,000 posts deep ("page 1,000"), from one of the
-- cursors the driver passes in BENCH_DEEP_CURSORS, taken at random.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

local paths = cursor_paths("BENCH_DEEP_CURSORS", "/posts?limit=50&cursor=")

function request()
    return get(paths[math.random(1, #paths)])
end
