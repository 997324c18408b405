-- PATCH /posts/{id}: a merge patch of title and published, no If-Match (never a 412).
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

function request()
    return patch_post_request()
end
