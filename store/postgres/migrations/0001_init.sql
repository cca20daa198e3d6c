-- Schema 1 of bouncer's PostgreSQL store. Every table lives in bouncer's
-- own schema (Options.Schema, "bouncer" by default): the connection's
-- search_path names only that schema, so nothing here touches the tables
-- of another application in the same database (listmonk's are in public).
--
-- Keys that an attacker chooses (addresses, domains, statuses, MTA names)
-- are bytea, cut to 255 bytes where they are indexed: they sort by byte as
-- bbolt's keys do, and a NUL or odd encoding cannot fail an insert.
-- Queries check the decoded value itself before returning it. Times used
-- for ordering or retention are int8 Unix nanoseconds; record and message
-- IDs are the 12 bytes of store.Record.ID (8-byte big-endian Unix nanos,
-- 4-byte sequence), so they sort in arrival order.

-- idgen: the last ID handed out; writers hold the writer lock, so IDs
-- grow across every host.
CREATE TABLE idgen (
	one   bool PRIMARY KEY DEFAULT true CHECK (one),
	nanos int8 NOT NULL,
	seq   int8 NOT NULL
);
INSERT INTO idgen VALUES (true, 0, 0);

-- meta: raw_pruned_before (decimal Unix nanoseconds).
CREATE TABLE meta (
	key   text PRIMARY KEY,
	value text NOT NULL
);

-- raw: the raw message of each delivery; TOAST compresses large values.
CREATE TABLE raw (
	id   bytea PRIMARY KEY,
	data bytea NOT NULL
);

-- records: one per (message, recipient); rec is the Record as JSON.
CREATE TABLE records (
	id     bytea PRIMARY KEY,
	msg_id bytea NOT NULL,
	addr   bytea NOT NULL,
	domain bytea NOT NULL,
	status bytea NOT NULL,
	kind   bytea NOT NULL,
	rec    json NOT NULL
);
CREATE INDEX records_addr ON records (addr, id);
CREATE INDEX records_domain ON records (domain, id);
CREATE INDEX records_status ON records (status, id);
CREATE INDEX records_dstatus ON records (domain, status, id);
CREATE INDEX records_kind ON records (kind, id);

-- seen: dedupe key -> the first record with it (its ID says when).
CREATE TABLE seen (
	key bytea PRIMARY KEY,
	id  bytea NOT NULL
);
CREATE INDEX seen_id ON seen (id);

CREATE TABLE suppressions (
	address bytea PRIMARY KEY,
	domain  bytea NOT NULL,
	data    json NOT NULL
);
CREATE INDEX suppressions_domain ON suppressions (domain, address);

-- soft: soft counters; last is the newest event, win the decay window
-- (0: never), both nanoseconds, for PruneSoft.
CREATE TABLE soft (
	address bytea PRIMARY KEY,
	data    json NOT NULL,
	last    int8 NOT NULL,
	win     int8 NOT NULL
);

-- storm_sets: the addresses counted per (kind, key, status); last is the
-- newest address's time, for the sweep.
CREATE TABLE storm_sets (
	kind   text NOT NULL,
	key    bytea NOT NULL,
	status bytea NOT NULL,
	data   json NOT NULL,
	last   int8 NOT NULL,
	PRIMARY KEY (kind, key, status)
);
CREATE INDEX storm_sets_last ON storm_sets (last);

CREATE TABLE storm_flags (
	domain bytea PRIMARY KEY,
	data   json NOT NULL
);

CREATE TABLE holds (
	domain  bytea NOT NULL,
	address bytea NOT NULL,
	data    json NOT NULL,
	PRIMARY KEY (domain, address)
);

-- domains: the aggregates (DomainStat as JSON without storm and MX
-- health); last_seen orders RecentDomains.
CREATE TABLE domains (
	domain    bytea PRIMARY KEY,
	data      json NOT NULL,
	last_seen int8 NOT NULL
);
CREATE INDEX domains_last_seen ON domains (last_seen, domain);

CREATE TABLE dom_status (
	status bytea NOT NULL,
	domain bytea NOT NULL,
	PRIMARY KEY (status, domain)
);

CREATE TABLE mx_health (
	domain bytea PRIMARY KEY,
	data   json NOT NULL
);

CREATE TABLE outbox_targets (
	name text PRIMARY KEY,
	data json NOT NULL
);

-- outbox: queued events. next_try and lease_until are nanoseconds of the
-- push worker's clock; an event is due when both are not after now.
-- OutboxDue sets lease_until, so no other host sends the event until the
-- lease ends.
CREATE SEQUENCE outbox_seq;
CREATE TABLE outbox (
	seq         int8 PRIMARY KEY,
	target      text NOT NULL,
	next_try    int8 NOT NULL,
	lease_until int8 NOT NULL DEFAULT 0,
	data        json NOT NULL
);
CREATE INDEX outbox_due ON outbox (next_try, seq);

CREATE TABLE outbox_dead (
	seq  int8 PRIMARY KEY,
	data json NOT NULL
);
