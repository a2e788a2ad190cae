-- HTTP API: users and their permissions, OAuth2 clients, tokens, API-function request
-- records with their log lines, and the task indexes that RQL list queries use.

CREATE TABLE users (
    id                  text PRIMARY KEY,
    email               text NOT NULL UNIQUE,
    -- Argon2id hash in PHC string form ($argon2id$v=19$m=…,t=…,p=…$salt$hash).
    password_hash       text NOT NULL,
    -- ExtraHorizon permission names, e.g. VIEW_TASKS or EXECUTE_TASK_FUNCTION:my-function.
    permissions         text[] NOT NULL DEFAULT '{}',
    creation_timestamp  timestamptz NOT NULL DEFAULT now(),
    update_timestamp    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE oauth2_clients (
    -- The application id, reported as createdByApplicationId.
    id                  text PRIMARY KEY,
    client_id           text NOT NULL UNIQUE,
    -- Argon2id hash of the client secret; NULL for a public client that has none.
    secret_hash         text,
    name                text NOT NULL,
    creation_timestamp  timestamptz NOT NULL DEFAULT now()
);

-- One row per login (an access and refresh token pair) or per API token (access only).
-- Tokens are 256-bit random strings, so a SHA-256 digest is stored and looked up.
CREATE TABLE tokens (
    id                  text PRIMARY KEY,
    user_id             text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    application_id      text REFERENCES oauth2_clients (id) ON DELETE CASCADE,
    access_token_hash   text NOT NULL UNIQUE,
    access_expires_at   timestamptz NOT NULL,
    refresh_token_hash  text UNIQUE,
    refresh_expires_at  timestamptz,
    description         text,
    creation_timestamp  timestamptz NOT NULL DEFAULT now(),
    CHECK ((refresh_token_hash IS NULL) = (refresh_expires_at IS NULL))
);

CREATE INDEX tokens_user ON tokens (user_id);

-- One row per API-function call, written after the response on a best-effort basis.
CREATE TABLE api_requests (
    id              text PRIMARY KEY,
    function_name   text NOT NULL,
    method          text NOT NULL,
    path            text NOT NULL,
    user_id         text,
    application_id  text,
    status_code     integer NOT NULL,
    timestamp       timestamptz NOT NULL,
    duration        double precision NOT NULL,
    error           jsonb
);

CREATE INDEX api_requests_timestamp ON api_requests (timestamp, id);
CREATE INDEX api_requests_function_name ON api_requests (function_name, timestamp);

CREATE TABLE api_request_logs (
    api_request_id  text NOT NULL,
    line_number     integer NOT NULL,
    timestamp       timestamptz NOT NULL,
    message         text NOT NULL,
    PRIMARY KEY (api_request_id, line_number)
);

-- RQL lists default to creation order, and most filters name a status or a function.
CREATE INDEX tasks_creation ON tasks (creation_timestamp, id);
CREATE INDEX tasks_status_creation ON tasks (status, creation_timestamp, id);
CREATE INDEX tasks_function_status_creation ON tasks (function_name, status, creation_timestamp, id);
CREATE INDEX tasks_tags ON tasks USING gin (tags);
