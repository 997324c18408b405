-- Shared by the scenario scripts of `make bench` (loadtests/bench.py runs wrk with them).
--
-- * Ids are drawn uniformly over the whole seeded data set: 1..BENCH_MAX_USER_ID and
--   1..BENCH_MAX_POST_ID, which the driver reads from the database.
-- * Each wrk thread has its own Lua state and its own random sequence, seeded with the
--   thread's number: threads draw different ids, and every round (service or baseline)
--   draws the same ones, so both are sent the same requests.
-- * done() prints one machine-readable line, "BENCH_RESULT {json}", with wrk's own
--   counts and latency percentiles (microseconds), which the driver parses.

max_user_id = tonumber(os.getenv("BENCH_MAX_USER_ID") or "") or 10000
max_post_id = tonumber(os.getenv("BENCH_MAX_POST_ID") or "") or 200000

wrk.headers["Content-Type"] = "application/json"
-- The service requires a token, as in production; the baseline ignores it.
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_TOKEN") or "")
-- The token rounds of the replica bench send a write's Consistency-Token with every request
-- (the service reads it on GET only): each read then runs the replica's visibility check.
local consistency_token = os.getenv("BENCH_CONSISTENCY_TOKEN") or ""
if consistency_token ~= "" then
    wrk.headers["Consistency-Token"] = consistency_token
end

local threads_set_up = 0

function setup(thread)
    threads_set_up = threads_set_up + 1
    thread:set("thread_number", threads_set_up)
end

function init(args)
    math.randomseed(7919 * (thread_number or 1))
end

function random_user_id()
    return math.random(1, max_user_id)
end

function random_post_id()
    return math.random(1, max_post_id)
end

function get(path)
    return wrk.format("GET", path)
end

function send_json(method, path, body)
    return wrk.format(method, path, nil, body)
end

-- About 500 characters, like the seeded posts; JSON-safe as it is.
local words = {"the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while",
    "every", "caller", "gets", "its", "page", "of", "posts", "newest", "first"}

function sentence(length)
    local parts = {}
    local size = 0
    while size < length do
        local word = words[math.random(1, #words)]
        parts[#parts + 1] = word
        size = size + #word + 1
    end
    return table.concat(parts, " "):sub(1, length)
end

local bodies = {}

function post_body()
    -- A few hundred distinct bodies, made once per thread: the benchmark measures the
    -- servers, not Lua building strings.
    if #bodies == 0 then
        for i = 1, 256 do
            bodies[i] = sentence(500)
        end
    end
    return bodies[math.random(1, #bodies)]
end

function create_post_request()
    local body = string.format(
        '{"author_id":%d,"title":"%s","body":"%s","published":%s}',
        random_user_id(), sentence(40), post_body(), math.random(2) == 1 and "true" or "false")
    return send_json("POST", "/posts", body)
end

function patch_post_request()
    local body = string.format('{"title":"%s","published":%s}',
        sentence(30), math.random(2) == 1 and "true" or "false")
    return send_json("PATCH", "/posts/" .. random_post_id(), body)
end

function done(summary, latency, requests)
    local errors = summary.errors
    io.write(string.format(
        'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,' ..
        '"read_errors":%d,"write_errors":%d,"status_errors":%d,"timeouts":%d,' ..
        '"mean_us":%.1f,"p50_us":%d,"p95_us":%d,"p99_us":%d,"max_us":%d}\n',
        summary.requests, summary.duration, summary.bytes, errors.connect, errors.read,
        errors.write, errors.status, errors.timeout, latency.mean,
        latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end

-- The paths `prefix` .. cursor for each of the comma-separated cursors in environment
-- variable `name`: cursors are signed by the server, so the driver walks the listing once
-- and passes the real ones it was given.
function cursor_paths(name, prefix)
    local paths = {}
    for cursor in string.gmatch(os.getenv(name) or "", "[^,]+") do
        paths[#paths + 1] = prefix .. cursor
    end
    assert(#paths > 0, name .. " is empty")
    return paths
end
