-- The read-heavy mix of the Locust ReadHeavyMix user: GET /posts/{id} 60%,
-- GET /users/{id}/posts 25%, POST /posts 10%, PATCH /posts/{id} 5%.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

function request()
    local draw = math.random(1, 100)
    if draw <= 60 then
        return get("/posts/" .. random_post_id())
    elseif draw <= 85 then
        return get("/users/" .. random_user_id() .. "/posts")
    elseif draw <= 95 then
        return create_post_request()
    end
    return patch_post_request()
end
