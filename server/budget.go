package server

import (
	"container/list"
	"sync"
	"time"
)

// budget bounds the bytes of message bodies held in memory at once across
// all sessions (Options.MaxDataMemory). A session takes budget in chunks as
// it reads DATA and gives it all back after the Saver returned.
//
// Taking budget bit by bit invites a deadlock: every session holds part of
// its message and waits for more, and none can finish. To rule it out the
// sessions still reading queue in the order they first asked, and only
// the oldest (the head of the queue) may use the last reserve bytes of the
// limit. Everyone else is held to limit-reserve in all, so once the
// sessions that have finished reading have saved their messages and given
// their bytes back (which needs no budget), the head finds at least
// reserve bytes for itself; reserve is what one message of the largest
// size needs, so the head always finishes reading, and then the next one
// in line becomes the head.
type budget struct {
	limit   int64
	reserve int64

	mu      sync.Mutex
	used    int64
	peak    int64
	queue   list.List     // of *grant, oldest first
	waiters int           // goroutines blocked in take
	changed chan struct{} // closed and replaced when budget may have freed up
	closed  bool          // the server is shutting down: nobody waits
}

func newBudget(limit, reserve int64) *budget {
	return &budget{limit: limit, reserve: min(reserve, limit), changed: make(chan struct{})}
}

// grant is one session's share of the budget for one message.
type grant struct {
	b      *budget
	held   int64
	elem   *list.Element // in b.queue; nil until the first take
	waited time.Duration // time spent waiting in take, in all
}

// take adds n bytes to g, waiting while the budget is exhausted. It gives
// up once g has waited maxWait in all (over every take of this message)
// and returns false; g keeps what it held.
func (g *grant) take(n int64, maxWait time.Duration) bool {
	b := g.b
	if g.held+n > b.limit {
		return false // would never fit
	}
	b.mu.Lock()
	if g.elem == nil {
		g.elem = b.queue.PushBack(g)
	}
	var timer *time.Timer
	var start time.Time
	for !b.fits(g, n) {
		if b.closed {
			b.mu.Unlock()
			return false
		}
		if timer == nil {
			left := maxWait - g.waited
			if left <= 0 {
				b.mu.Unlock()
				return false
			}
			start = time.Now()
			timer = time.NewTimer(left)
			defer timer.Stop()
		}
		ch := b.changed
		b.waiters++
		b.mu.Unlock()
		var expired bool
		select {
		case <-ch:
		case <-timer.C:
			expired = true
		}
		b.mu.Lock()
		b.waiters--
		if expired && !b.fits(g, n) {
			g.waited += time.Since(start)
			b.mu.Unlock()
			return false
		}
	}
	if timer != nil {
		g.waited += time.Since(start)
	}
	g.held += n
	b.used += n
	b.peak = max(b.peak, b.used)
	b.mu.Unlock()
	return true
}

// fits reports whether n more bytes may go to g; b.mu must be held.
func (b *budget) fits(g *grant, n int64) bool {
	if b.queue.Front() == g.elem {
		return b.used+n <= b.limit
	}
	return b.used+n <= b.limit-b.reserve
}

// give returns n of g's bytes to the budget.
func (g *grant) give(n int64) {
	b := g.b
	b.mu.Lock()
	n = min(n, g.held)
	g.held -= n
	b.used -= n
	b.wake()
	b.mu.Unlock()
}

// doneReading leaves the queue but keeps what g holds: the message has
// been read and needs no more budget, so the next session in line may use
// the reserve. g's bytes come back with release, after Save, which needs
// no budget to finish.
func (g *grant) doneReading() {
	b := g.b
	b.mu.Lock()
	if g.elem != nil {
		b.queue.Remove(g.elem)
		g.elem = nil
		b.wake()
	}
	b.mu.Unlock()
}

// release returns everything g holds and leaves the queue.
func (g *grant) release() {
	b := g.b
	b.mu.Lock()
	b.used -= g.held
	g.held = 0
	if g.elem != nil {
		b.queue.Remove(g.elem)
		g.elem = nil
	}
	b.wake()
	b.mu.Unlock()
}

// wake tells waiting sessions to look again; b.mu must be held.
func (b *budget) wake() {
	if b.waiters > 0 {
		close(b.changed)
		b.changed = make(chan struct{})
	}
}

// close makes every take that would wait fail at once, now and later, so
// that a shutdown does not wait for DataMemoryWait.
func (b *budget) close() {
	b.mu.Lock()
	b.closed = true
	b.wake()
	b.mu.Unlock()
}

// stats returns the bytes in use and the most ever in use.
func (b *budget) stats() (used, peak int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used, b.peak
}
