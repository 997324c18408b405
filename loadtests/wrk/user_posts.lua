-- GET /users/{id}/posts: the first page (50) of a user's posts, users uniform.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

function request()
    return get("/users/" .. random_user_id() .. "/posts")
end
