package store

// migrations build the SQLite schema: migrations[i] takes a store from
// schema version i to i+1 (PRAGMA user_version). Each runs in its own
// transaction together with the version bump, so a crash leaves the store
// at one version or the next. Append only: never edit a migration that has
// shipped.
var migrations = []string{
	// 1: desired state, revision, activity log.
	`
-- The server settings: one row, config.Server as JSON.
CREATE TABLE server (
	id       INTEGER PRIMARY KEY CHECK (id = 1),
	settings TEXT NOT NULL CHECK (json_valid(settings))
) STRICT;
INSERT INTO server (id, settings) VALUES (1, '{}');

-- The apps: config.App as JSON, by name. Its domains are also rows of
-- domains, so that a domain belongs to one app even at the database level.
CREATE TABLE apps (
	name TEXT PRIMARY KEY,
	spec TEXT NOT NULL CHECK (json_valid(spec))
) STRICT;

CREATE TABLE domains (
	domain TEXT PRIMARY KEY,
	app    TEXT NOT NULL REFERENCES apps (name) ON DELETE CASCADE ON UPDATE CASCADE
) STRICT;
CREATE INDEX domains_by_app ON domains (app);

-- The revision of the desired state: one row, up by one per change.
CREATE TABLE revision (
	id    INTEGER PRIMARY KEY CHECK (id = 1),
	value INTEGER NOT NULL CHECK (value >= 0)
) STRICT;
INSERT INTO revision (id, value) VALUES (1, 0);

-- The activity log. AUTOINCREMENT so that an ID is never reused; at is UTC
-- in RFC 3339 with nanoseconds.
CREATE TABLE activity (
	id        INTEGER PRIMARY KEY AUTOINCREMENT,
	at        TEXT NOT NULL,
	who       TEXT NOT NULL,
	from_addr TEXT NOT NULL,
	action    TEXT NOT NULL,
	target    TEXT NOT NULL,
	before    TEXT CHECK (before IS NULL OR json_valid(before)),
	after     TEXT CHECK (after IS NULL OR json_valid(after)),
	detail    TEXT NOT NULL
) STRICT;
CREATE INDEX activity_by_target ON activity (target, id);

-- Who changed what is evidence: it is appended to, never rewritten.
CREATE TRIGGER activity_no_update BEFORE UPDATE ON activity
BEGIN
	SELECT RAISE(ABORT, 'activity log is append-only: entries cannot be changed');
END;
CREATE TRIGGER activity_no_delete BEFORE DELETE ON activity
BEGIN
	SELECT RAISE(ABORT, 'activity log is append-only: entries cannot be deleted');
END;
`,
	// 2: the firewall's desired state.
	`
-- The firewall: one row, config.Firewall as JSON.
CREATE TABLE firewall (
	id      INTEGER PRIMARY KEY CHECK (id = 1),
	desired TEXT NOT NULL CHECK (json_valid(desired))
) STRICT;
INSERT INTO firewall (id, desired) VALUES (1, '{}');
`,
	// 3: what the reconcilers last put in force on the host.
	`
-- What a reconciler last put in force (the firewall's rules), by name, as
-- JSON: a restart puts back what was in force, not what is merely desired
-- (a change that rolled back is desired, but was never confirmed).
CREATE TABLE in_force (
	name  TEXT PRIMARY KEY,
	value TEXT NOT NULL CHECK (json_valid(value)),
	at    TEXT NOT NULL
) STRICT;
`,
	// 4: the guard's desired state and its bans.
	`
-- The brute-force guard: one row, config.Guard as JSON.
CREATE TABLE guard (
	id      INTEGER PRIMARY KEY CHECK (id = 1),
	desired TEXT NOT NULL CHECK (json_valid(desired))
) STRICT;
INSERT INTO guard (id, desired) VALUES (1, '{}');

-- The bans in force, by prefix: guard.Ban as JSON, with its expiry
-- (RFC 3339 UTC, empty for a ban until lifted) so that a restart puts each
-- back with the time it has left.
CREATE TABLE bans (
	prefix  TEXT PRIMARY KEY,
	expires TEXT NOT NULL,
	ban     TEXT NOT NULL CHECK (json_valid(ban))
) STRICT;

-- How far the guard has read each log source (a file's inode and offset,
-- the journal's cursor), so that a restart resumes there.
CREATE TABLE guard_positions (
	source   TEXT PRIMARY KEY,
	position TEXT NOT NULL
) STRICT;
`,
	// 5: what moat manages of OpenSSH.
	`
-- SSH: one row, config.SSH as JSON (the keys moat manages, by title).
CREATE TABLE ssh (
	id      INTEGER PRIMARY KEY CHECK (id = 1),
	desired TEXT NOT NULL CHECK (json_valid(desired))
) STRICT;
INSERT INTO ssh (id, desired) VALUES (1, '{}');
`,
	// 6: the mail relay: its settings, the apps' credentials, the DKIM
	// keys and the queue.
	`
-- The mail relay: one row, config.Mail as JSON.
CREATE TABLE mail (
	id      INTEGER PRIMARY KEY CHECK (id = 1),
	desired TEXT NOT NULL CHECK (json_valid(desired))
) STRICT;
INSERT INTO mail (id, desired) VALUES (1, '{}');

-- Each app's SMTP password, as an argon2id hash only.
CREATE TABLE mail_credentials (
	app     TEXT PRIMARY KEY,
	hash    TEXT NOT NULL,
	created TEXT NOT NULL
) STRICT;

-- The DKIM signing keys, PKCS #8 PEM by selector.
CREATE TABLE mail_dkim (
	selector TEXT PRIMARY KEY,
	key      TEXT NOT NULL,
	created  TEXT NOT NULL
) STRICT;

-- The queue: a message is a row from the moment the relay answers 250;
-- its text (data) is dropped once it is delivered or bounced, and the row
-- a day later. accepted and next_attempt are RFC 3339 UTC, fixed width,
-- so that they sort as text.
CREATE TABLE mail_queue (
	id           TEXT PRIMARY KEY,
	app          TEXT NOT NULL,
	sender       TEXT NOT NULL,
	recipients   TEXT NOT NULL CHECK (json_valid(recipients)),
	size         INTEGER NOT NULL,
	message_id   TEXT NOT NULL,
	accepted     TEXT NOT NULL,
	state        TEXT NOT NULL CHECK (state IN ('queued', 'sending', 'delivered', 'bounced')),
	attempts     INTEGER NOT NULL,
	next_attempt TEXT NOT NULL,
	last_error   TEXT NOT NULL,
	data         BLOB
) STRICT;
CREATE INDEX mail_queue_due ON mail_queue (state, next_attempt);
CREATE INDEX mail_queue_accepted ON mail_queue (accepted);
`,
	// 7: how people sign in to the dashboard and the HTTPS API.
	`
-- Sign-in settings: one row, config.Auth as JSON.
CREATE TABLE auth (
	id      INTEGER PRIMARY KEY CHECK (id = 1),
	desired TEXT NOT NULL CHECK (json_valid(desired))
) STRICT;
INSERT INTO auth (id, desired) VALUES (1, '{}');
`,
	// 8: the accounts that sign in to the dashboard and the API, and what
	// proves them: only hashes of passwords, session and API tokens,
	// codes and invitations; TOTP secrets sealed with a key kept outside
	// this file.
	`
CREATE TABLE accounts (
	id           INTEGER PRIMARY KEY,
	email        TEXT NOT NULL UNIQUE COLLATE NOCASE,
	name         TEXT NOT NULL,
	role         TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
	hash         TEXT NOT NULL,
	mfa          TEXT NOT NULL CHECK (mfa IN ('email', 'totp', 'off')),
	totp         BLOB,
	totp_pending BLOB,
	totp_last    INTEGER NOT NULL DEFAULT 0,
	created      TEXT NOT NULL
) STRICT;

-- Sessions by the SHA-256 of their token; stage 'password' is a sign-in
-- waiting for its second factor.
CREATE TABLE auth_sessions (
	hash      TEXT PRIMARY KEY,
	account   INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
	stage     TEXT NOT NULL CHECK (stage IN ('password', 'full')),
	csrf      TEXT NOT NULL,
	created   TEXT NOT NULL,
	last_seen TEXT NOT NULL,
	addr      TEXT NOT NULL,
	agent     TEXT NOT NULL
) STRICT;
CREATE INDEX auth_sessions_account ON auth_sessions (account);

-- The email code of a session's sign-in, with the tries made against it.
CREATE TABLE email_codes (
	session TEXT PRIMARY KEY REFERENCES auth_sessions (hash) ON DELETE CASCADE,
	hash    TEXT NOT NULL,
	expires TEXT NOT NULL,
	tries   INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE TABLE recovery_codes (
	account INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
	hash    TEXT NOT NULL,
	PRIMARY KEY (account, hash)
) STRICT;

CREATE TABLE api_tokens (
	id        TEXT PRIMARY KEY,
	hash      TEXT NOT NULL UNIQUE,
	account   INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
	name      TEXT NOT NULL,
	scope     TEXT NOT NULL,
	created   TEXT NOT NULL,
	expires   TEXT NOT NULL,
	last_used TEXT NOT NULL,
	last_addr TEXT NOT NULL
) STRICT;
CREATE INDEX api_tokens_account ON api_tokens (account);

-- When each account last signed in from each address, for the email
-- about a sign-in from somewhere new.
CREATE TABLE seen_addresses (
	account INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
	addr    TEXT NOT NULL,
	last    TEXT NOT NULL,
	PRIMARY KEY (account, addr)
) STRICT;

CREATE TABLE invitations (
	hash    TEXT PRIMARY KEY,
	account INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
	expires TEXT NOT NULL
) STRICT;
`,
	// 9: passkeys (WebAuthn credentials) and the ceremonies under way.
	// A passkey's public key is not secret; its fields are columns, as
	// the WebAuthn library advises, so that they can be read and queried.
	`
CREATE TABLE passkeys (
	id                 BLOB PRIMARY KEY,
	account            INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
	name               TEXT NOT NULL,
	public_key         BLOB NOT NULL,
	sign_count         INTEGER NOT NULL CHECK (sign_count >= 0),
	aaguid             BLOB NOT NULL,
	transports         TEXT NOT NULL,
	flags              INTEGER NOT NULL,
	attestation_type   TEXT NOT NULL,
	attestation_format TEXT NOT NULL,
	clone_warning      INTEGER NOT NULL DEFAULT 0,
	created            TEXT NOT NULL,
	last_used          TEXT NOT NULL
) STRICT;
CREATE INDEX passkeys_account ON passkeys (account);

-- A ceremony's challenge and what it was begun for, by the hash of what
-- anchors it: a session, or the cookie of a passwordless sign-in.
CREATE TABLE passkey_ceremonies (
	owner   TEXT PRIMARY KEY,
	data    BLOB NOT NULL,
	expires TEXT NOT NULL
) STRICT;
CREATE INDEX passkey_ceremonies_expires ON passkey_ceremonies (expires);
`,
	// 10: a one-time link is an invitation or a password reset: the one
	// is not the other, nor is it good for as long.
	`
ALTER TABLE invitations ADD COLUMN purpose TEXT NOT NULL DEFAULT 'invite' CHECK (purpose IN ('invite', 'reset'));
`,
	// 11: private apps. A one-time code takes a signed-in account from
	// the admin host to one private app's domain, where it opens a
	// session of that domain only.
	`
CREATE TABLE app_codes (
	hash    TEXT PRIMARY KEY,
	account INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
	domain  TEXT NOT NULL,
	expires TEXT NOT NULL
) STRICT;

CREATE TABLE app_sessions (
	hash      TEXT PRIMARY KEY,
	account   INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
	domain    TEXT NOT NULL,
	created   TEXT NOT NULL,
	last_seen TEXT NOT NULL,
	addr      TEXT NOT NULL,
	agent     TEXT NOT NULL
) STRICT;
CREATE INDEX app_sessions_account ON app_sessions (account);
`,
	// 12: where backups go, and how many are kept.
	`
CREATE TABLE backup (
	id      INTEGER PRIMARY KEY CHECK (id = 1),
	desired TEXT NOT NULL CHECK (json_valid(desired))
) STRICT;
INSERT INTO backup (id, desired) VALUES (1, '{}');
`,
	// 13: apps removed within their grace period: the app as it was and
	// the backup taken before it went.
	`
CREATE TABLE removed_apps (
	name       TEXT PRIMARY KEY,
	spec       TEXT NOT NULL CHECK (json_valid(spec)),
	repository TEXT NOT NULL,
	snapshot   TEXT NOT NULL,
	removed    TEXT NOT NULL,
	expires    TEXT NOT NULL
) STRICT;
`,
	// 14: the audits' history: each report, with its score.
	`
CREATE TABLE audits (
	id     INTEGER PRIMARY KEY,
	at     TEXT NOT NULL,
	score  INTEGER NOT NULL,
	report TEXT NOT NULL CHECK (json_valid(report))
) STRICT;
`,
}
