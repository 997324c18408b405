-- POST /posts: a valid post of about 500 characters by a random seeded user.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

function request()
    return create_post_request()
end
