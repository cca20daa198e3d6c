package server

import (
	"fmt"
	"sync"
	"time"
)

// rates holds the message, byte and push-event buckets of each client
// network (netKey) for Options.MessageRate, ByteRate and PushRate, as
// Postfix's anvil counts smtpd_client_message_rate_limit. A bucket that has refilled is
// pruned once a minute, so the map holds only networks that sent mail in
// about the last minute.
type rates struct {
	mu        sync.Mutex
	entries   map[string]*rateEntry
	lastPrune time.Time
}

type rateEntry struct {
	msgs  float64 // message tokens
	bytes float64 // byte tokens; negative after a message larger than what was left
	// events are push-event tokens; negative after a message that made
	// more events than were left.
	events float64
	last   time.Time
}

// limits are the refill rates per second and the bucket sizes.
func (s *Server) rateLimits() (msgPerSec, msgCap, bytePerSec, byteCap float64) {
	o := &s.opts
	return o.MessageRate / 60, float64(o.MessageBurst),
		float64(o.ByteRate) / 60, float64(max(o.ByteRate, o.MaxMessageBytes))
}

// eventLimits are the push-event bucket's refill rate per second and size.
func (s *Server) eventLimits() (perSec, capacity float64) {
	return max(s.opts.PushRate, 0) / 3600, max(s.opts.PushRate, 0)
}

// entry returns the refilled bucket of key; r.mu must be held.
func (s *Server) rateEntry(key string, now time.Time) *rateEntry {
	r := &s.rates
	msgPerSec, msgCap, bytePerSec, byteCap := s.rateLimits()
	evPerSec, evCap := s.eventLimits()
	if now.Sub(r.lastPrune) > time.Minute {
		for k, e := range r.entries {
			dt := now.Sub(e.last).Seconds()
			if e.msgs+dt*msgPerSec >= msgCap && e.bytes+dt*bytePerSec >= byteCap && e.events+dt*evPerSec >= evCap {
				delete(r.entries, k)
			}
		}
		r.lastPrune = now
	}
	e := r.entries[key]
	if e == nil {
		e = &rateEntry{msgs: msgCap, bytes: byteCap, events: evCap, last: now}
		r.entries[key] = e
	}
	dt := now.Sub(e.last).Seconds()
	e.msgs = min(msgCap, e.msgs+dt*msgPerSec)
	e.bytes = min(byteCap, e.bytes+dt*bytePerSec)
	e.events = min(evCap, e.events+dt*evPerSec)
	e.last = now
	return e
}

// takeMessage spends one message token of c's network for a message of
// size bytes (the SIZE= parameter, 0 if none). It refuses while the byte
// bucket is in debt or cannot hold the declared size.
func (s *Server) takeMessage(c *conn, size int64, now time.Time) error {
	if c.trusted {
		return nil
	}
	s.rates.mu.Lock()
	defer s.rates.mu.Unlock()
	e := s.rateEntry(c.net, now)
	switch {
	case e.msgs < 1:
		return errMessageRate
	case e.bytes <= 0 || float64(size) > e.bytes:
		return errByteRate
	}
	e.msgs--
	return nil
}

// chargeBytes counts n message bytes read from c's network.
func (s *Server) chargeBytes(c *conn, n int64, now time.Time) {
	if c.trusted {
		return
	}
	s.rates.mu.Lock()
	defer s.rates.mu.Unlock()
	s.rateEntry(c.net, now).bytes -= float64(n)
}

// pushHold returns why the push events of c's next message are held
// (store.Delivery.HoldPush): "" while its network has push-event tokens
// left, or when c is a trusted relay or PushRate is negative.
func (s *Server) pushHold(c *conn, now time.Time) string {
	if c.trusted || s.opts.PushRate < 0 {
		return ""
	}
	s.rates.mu.Lock()
	defer s.rates.mu.Unlock()
	if s.rateEntry(c.net, now).events >= 1 {
		return ""
	}
	return fmt.Sprintf("held: client network %s over its push budget (smtp.push_rate %g events per hour); bouncer outbox retry sends it", c.net, s.opts.PushRate)
}

// chargeEvents counts n push events made by a message from c's network.
func (s *Server) chargeEvents(c *conn, n int, now time.Time) {
	if c.trusted || s.opts.PushRate < 0 || n == 0 {
		return
	}
	s.rates.mu.Lock()
	defer s.rates.mu.Unlock()
	s.rateEntry(c.net, now).events -= float64(n)
}

// disk caches Options.FreeSpace for a second.
type disk struct {
	mu      sync.Mutex
	free    int64
	checked time.Time
}

// diskAllows reports whether n more bytes leave at least MinFreeBytes
// free. Without FreeSpace, or when it fails, it allows: the store's own
// error then answers 451.
func (s *Server) diskAllows(n int64, now time.Time) bool {
	if s.opts.FreeSpace == nil {
		return true
	}
	d := &s.disk
	d.mu.Lock()
	defer d.mu.Unlock()
	if now.Sub(d.checked) >= time.Second || d.checked.IsZero() {
		free, err := s.opts.FreeSpace()
		if err != nil {
			s.log.Debug("reading free disk space failed", "err", err)
			free = -1
		}
		d.free, d.checked = free, now
	}
	return d.free < 0 || d.free-n >= s.opts.MinFreeBytes
}
