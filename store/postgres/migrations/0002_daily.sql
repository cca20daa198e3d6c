-- Schema 2: the daily counters (store.Day), one row per UTC day and
-- counter, added to as records are stored.
CREATE TABLE daily (
	day text NOT NULL,
	key text NOT NULL,
	n   int8 NOT NULL,
	PRIMARY KEY (day, key)
);
