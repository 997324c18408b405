-- GET /posts/{id}, ids uniform over the seeded posts.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

function request()
    return get("/posts/" .. random_post_id())
end
